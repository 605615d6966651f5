"""Rebuild the model gliomaseg ships: train the cross-validation's chosen setup on every real case plus
synthetic post-treatment cases, and package it with its card.

Run: ``.venv/bin/python benchmarks/build_model.py --work W`` (about an hour on 2 CPU cores; W outside the
work tree keeps the run, so a killed build resumes). Seeded: ``train --seed 0``, synthetic cases from
``bench_real.SYNTHETIC_SEED``. It reads ``results/real_cv.json`` (``bench_real.py summarise``) for the
setup, its cross-validated scores and its post-processing rules (tuned on every held-out prediction of
the cross-validation), trains with ``gliomaseg train`` as a user would, scores the result on held-out
synthetic post-treatment cases (the real ones have no cavity), and writes ``gliomaseg/models/<name>/``:
``config.json``, ``best.pt`` (float16 weights and the config, nothing else), ``postprocess.json``,
``model.json`` and ``MODEL_CARD.md``, plus the worst cross-validation cases' pictures. The training's
wall time and machine go into model.json and the card.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import torch
from bench_real import DEFAULT_DATA, SETUPS, SYNTHETIC_SEED, TUMOUR_REGIONS, synthetic_cases
from common import RESULTS, machine

from gliomaseg import __version__
from gliomaseg.data.synthetic import write_synthetic_dataset
from gliomaseg.evaluation.evaluate import evaluate, summarise
from gliomaseg.inference.predictor import predict
from gliomaseg.io.cases import find_case_folders
from gliomaseg.labels import REGIONS
from gliomaseg.model.checkpoint import load_checkpoint, save_checkpoint
from gliomaseg.model.packaged import DEFAULT_MODEL, INFO_FILE, MODELS_DIR
from gliomaseg.model.run_folder import RunFolder
from gliomaseg.postprocessing.rules import PostprocessRules

SYNTHETIC_TEST_SEED = SYNTHETIC_SEED + 1
SYNTHETIC_TEST_CASES = 8


def _link_all(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for folder in find_case_folders(source):
        if not (target / folder.name).exists():
            (target / folder.name).symlink_to(folder.resolve(), target_is_directory=True)


def train_model(data: Path, work: Path, options: tuple[str, ...], synthetic: int) -> tuple[RunFolder, list[str], float]:
    """``gliomaseg train`` on every real case and ``synthetic`` synthetic ones; the run, the command and its seconds."""
    cases = work / "cases"
    _link_all(data, cases)
    if synthetic:
        _link_all(synthetic_cases(work, synthetic), cases)
    run = RunFolder(work / "run")
    command = ["gliomaseg", "train", str(cases), "--out", str(run.path), "--preset", "cpu", "--val-fraction", "0", "--seed", "0",
               "--resume", *options]
    print(" ".join(command), file=sys.stderr, flush=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gliomaseg", "-q", *command[1:]], check=True)
    return run, command, time.perf_counter() - started


def export(run: RunFolder, target: RunFolder, rules: dict, provenance: dict) -> None:
    """The run cut to what prediction needs: float16 weights and the config in best.pt, config.json, the rules."""
    state = load_checkpoint(run.checkpoint())
    weights = {k: v.half() if v.is_floating_point() else v for k, v in state["model"].items()}
    target.path.mkdir(parents=True, exist_ok=True)
    save_checkpoint({"model": weights, "config": state["config"], "epoch": state["epoch"]}, target.best_checkpoint)
    shutil.copyfile(run.config_file, target.config_file)
    target.save_rules(PostprocessRules.from_dict(rules), provenance)


def synthetic_scores(target: RunFolder, work: Path) -> dict[str, float]:
    """Mean lesion-wise Dice per region of the packaged model on held-out synthetic post-treatment cases."""
    test = work / "synthetic-test"
    if not test.exists():
        write_synthetic_dataset(test, SYNTHETIC_TEST_CASES, seed=SYNTHETIC_TEST_SEED, workers=2, quiet=True)
    predict(test, work / "synthetic-pred", target.path, device="cpu", overwrite=True, quiet=True)
    summary = summarise(evaluate(work / "synthetic-pred", test, quiet=True))
    return {region: round(summary[region]["LesionWise_Score_Dice"]["mean"], 3) for region in REGIONS}


def _interval_table(stats: dict[str, dict[str, dict]], digits: int) -> list[str]:
    return [f"| {metric} | " + " | ".join(f"{stats[metric][r]['mean']:.{digits}f} [{stats[metric][r]['low']:.{digits}f}, "
                                         f"{stats[metric][r]['high']:.{digits}f}]" for r in TUMOUR_REGIONS) + " |" for metric in stats]


def model_card(info: dict, cv: dict, failures: list[str]) -> str:
    """MODEL_CARD.md from model.json's facts and the cross-validation's results."""
    chosen = cv["setups"][cv["chosen"]]
    scores = {"lesion-wise Dice": info["cross_validation"]["dice"], "lesion-wise HD95 (mm)": info["cross_validation"]["hd95"]}
    training = info["training"]
    worst = [name[len("real_cv_"):-len(".png")] for name in failures]  # bench_real draws real_cv_<case>.png
    lines = [
        f"# {info['name']}: model card",
        "",
        info["summary"] + ".",
        "",
        "**Intended use: research only.** It is not a medical device and has not been validated for clinical use; every",
        "segmentation must be reviewed by an expert. It was trained on 28 pre-operative cases, a tiny fraction of the",
        "~1,350 cases of BraTS 2024 GLI: expect it to miss small or faint tumours (below).",
        "",
        "## What it does",
        "",
        "Input: the four co-registered, skull-stripped sequences t1n, t1c, t2w, t2f of one exam, on any 1 mm grid "
        "(`gliomaseg prepare` makes them from raw DICOM or NIfTI). Output: a label map on the input's grid: 1 NETC, 2 SNFH, 3 ET, 4 RC.",
        f"Network: {info['network']}. Preprocessing: brain box (intensity threshold + largest component), each sequence clipped at its "
        f"1st/99th percentile and z-scored inside the brain, resized to {info['grid']}; probabilities are resized back to the "
        "brain box and turned into labels on the native grid, then cleaned by the post-processing rules in `postprocess.json`.",
        "",
        "## Training data",
        "",
        f"- **{training['real_cases']} real, expert-labelled pre-operative glioma cases** from the BraTS challenges (13 of BraTS 2018, "
        "13 of BraTS 2021, 2 of BraTS 2023, re-hosted in public repositories; their labels converted to the 2024 scheme). "
        "**BraTS data terms apply**: research use, and cite Menze et al. 2015 (IEEE TMI), Bakas et al. 2017 (Sci Data) and "
        "2018 (arXiv:1811.02629), Baid et al. 2021 (arXiv:2107.02314). The weights are derived from these data and carry "
        "the same terms.",
        f"- **{training['synthetic_cases']} synthetic post-treatment cases** (`gliomaseg synth`, seed {SYNTHETIC_SEED}): "
        "no real case has a resection cavity, so **RC was learned from synthetic cases only**.",
        "",
        "## How it was trained",
        "",
        f"`{' '.join(training['command'])}` (the cpu preset: {info['recipe']}), {training['wall_min']:.1f} min on "
        f"{training['machine']}, {training['date']}, gliomaseg {training['gliomaseg_version']}. "
        "`benchmarks/build_model.py` rebuilds it (seeded; see the README).",
        "",
        "## Cross-validated scores",
        "",
        f"The same setup ({cv['chosen']}: `{chosen['setup']}`) in {cv['settings']['folds']}-fold cross-validation by patient over the "
        f"{chosen['cases']} real cases: each case predicted by a model that never saw it (trained on the other "
        f"{chosen['cases'] - chosen['cases'] // cv['settings']['folds']} or so), post-processing rules tuned on the other folds only, "
        "official BraTS 2024 lesion-wise protocol on the native grid. Mean over cases with a 95 % bootstrap interval over cases "
        "(RC left out: these cases have none). The shipped model is trained on all of them, so these numbers are, if anything, "
        "a little pessimistic for it.",
        "",
        "| metric | " + " | ".join(TUMOUR_REGIONS) + " |",
        "|---|" + "---|" * len(TUMOUR_REGIONS),
        *_interval_table({"lesion-wise Dice": scores["lesion-wise Dice"]}, 3),
        *_interval_table({"lesion-wise HD95 (mm)": scores["lesion-wise HD95 (mm)"]}, 1),
        "",
        "Every setup compared, per case: `benchmarks/results/real_cv.md` in the source repository.",
        "",
        f"Resection cavity, on {SYNTHETIC_TEST_CASES} held-out synthetic post-treatment cases (seed {SYNTHETIC_TEST_SEED}), lesion-wise "
        "Dice: " + ", ".join(f"{r} {v:.3f}" for r, v in info["synthetic_test_dice"].items()) + ". Synthetic cavities are "
        "easier than real ones: treat RC on real post-operative scans as unvalidated.",
        "",
        "## Speed",
        "",
        info["speed"],
        "",
        "## Failure modes",
        "",
        "The cross-validation's worst cases (ground truth left, prediction right, three planes through the lesion):",
        "",
        *(f"- {case}: " + ", ".join(f"{r} {chosen['per_case'][case]['nested'][r][0]:.2f}" for r in TUMOUR_REGIONS)
          + f"\n\n  ![{case}](failures/{name})\n" for case, name in zip(worst, failures)),
        "What goes wrong: tumours without enhancement or with faint FLAIR signal are under-segmented or missed whole; "
        "thick-slice exams of BraTS 2013 (interpolated to 1 mm) are under-segmented; small cores (a few mL) are missed; "
        "a spurious speck far from the tumour counts as a false lesion under the lesion-wise protocol. Post-treatment "
        "anatomy (cavities, treatment effects) was seen only in synthetic cases.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="kept training run and synthetic cases (outside the work tree)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--name", default=DEFAULT_MODEL)
    parser.add_argument("--synthetic", type=int, help="synthetic cases added (default: the chosen setup's, else 14)")
    parser.add_argument("--speed", default="", help="the card's speed paragraph (from benchmarks/bench_predict.py)")
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"build_model: no real cases at {args.data}")
    cv = json.loads((RESULTS / "real_cv.json").read_text())
    setup = SETUPS[cv["chosen"]]
    synthetic = args.synthetic if args.synthetic is not None else (setup.synthetic or 14)
    run, command, seconds = train_model(args.data, args.work, setup.options, synthetic)
    target = RunFolder(MODELS_DIR / args.name)
    chosen = cv["setups"][cv["chosen"]]
    export(run, target, chosen["rules_all_cases"], {"tuned_on": f"every held-out prediction of the cross-validation of {cv['chosen']}",
                                                    "cases": chosen["cases"]})
    config = run.load_config()
    failures = []
    (target.path / "failures").mkdir(exist_ok=True)
    for overlay in cv["overlays"]:
        shutil.copyfile(RESULTS / overlay, target.path / "failures" / overlay)
        failures.append(overlay)
    info = {
        "name": args.name,
        "summary": (f"VNet3d on a {config.preprocess.size[0]}^3 grid of the brain box, trained on 28 real BraTS cases and "
                    f"{synthetic} synthetic post-treatment ones"),
        "network": f"the recipe's VNet3d, {sum(v.numel() for v in load_checkpoint(target.best_checkpoint)['model'].values() if v.is_floating_point()):,} "
                   f"weights in float16, {config.preprocess.channels} input channels ({', '.join(('t1n', 't1c', 't2w', 't2f', *config.preprocess.extra_channels))}), "
                   f"{config.train.targets} targets",
        "grid": "x".join(map(str, config.preprocess.size)),
        "recipe": (f"{config.train.epochs} epochs x {config.train.steps_per_epoch} steps of batch {config.train.batch_size}, AdamW lr "
                   f"{config.train.lr:g} cosine, Dice + cross-entropy, {config.train.augment} augmentation"),
        "training": {"command": command, "wall_min": round(seconds / 60, 1), "machine": machine(), "date": date.today().isoformat(),
                     "gliomaseg_version": __version__, "torch": torch.__version__, "python": platform.python_version(),
                     "real_cases": len(find_case_folders(args.data)), "synthetic_cases": synthetic},
        "cross_validation": {"setup": cv["chosen"], "folds": cv["settings"]["folds"], "cases": chosen["cases"],
                             "dice": {r: chosen["dice"]["nested"][r] for r in TUMOUR_REGIONS},
                             "hd95": {r: chosen["hd95"]["nested"][r] for r in TUMOUR_REGIONS}},
        "synthetic_test_dice": synthetic_scores(target, args.work),
        "speed": args.speed or "Not measured in this build: see `benchmarks/results/predict.md`.",
    }
    (target.path / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    target.model_card.write_text(model_card(info, cv, failures))
    print(json.dumps({"model": str(target.path), "train_min": info["training"]["wall_min"], "synthetic": info["synthetic_test_dice"]}))


if __name__ == "__main__":
    main()
