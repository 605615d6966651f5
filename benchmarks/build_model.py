"""Rebuild the model gliomaseg ships: train the cross-validation's chosen setup on every real case plus
synthetic post-treatment cases, and package it with its card.

Run: ``.venv/bin/python benchmarks/build_model.py --work W`` (about an hour on 2 CPU cores; W outside the
work tree keeps the run, so a killed build resumes). Seeded: ``train --seed 0``, synthetic cases from
``bench_real.SYNTHETIC_SEED``. It reads ``results/real_cv.json`` (``bench_real.py summarise``) for the
setup, its cross-validated scores and its post-processing rules (tuned on every held-out prediction of
the cross-validation). It trains with
``gliomaseg train`` as a user would, scores the result on held-out synthetic post-treatment cases (the
real ones have no cavity), and writes ``gliomaseg/models/<name>/``:
``config.json``, ``best.pt`` (float16 weights and the config, nothing else), ``postprocess.json``,
``model.json`` and ``MODEL_CARD.md``, plus the worst cross-validation cases' pictures. The training's
wall time and machine go into model.json and the card.

``--card-only --name NAME`` trains nothing: it writes a packaged model's card and model.json's cross-validation
again from the current ``results/real_cv.json`` (after a new default model, whose setup a model beside it is
compared with), keeping its weights, rules, training facts and speed.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import torch
from bench_real import (DEFAULT_DATA, INCOMPLETE_INPUTS, SETUPS, SYNTHETIC_SEED, TUMOUR_REGIONS, Setup, draw_worst, interval,
                        synthetic_cases, worst_cases)
from common import RESULTS, machine

from gliomaseg import __version__
from gliomaseg.data.synthetic import write_synthetic_dataset
from gliomaseg.evaluation.evaluate import evaluate, summarise
from gliomaseg.config import ExperimentConfig
from gliomaseg.data.carved_cavities import write_carved_cases
from gliomaseg.inference.predictor import predict
from gliomaseg.inference.two_stage import GATE_MM, MARGIN_MM, OVERLAP
from gliomaseg.io.atomic import write_text_atomic
from gliomaseg.io.cases import find_case_folders
from gliomaseg.labels import REGIONS
from gliomaseg.model.checkpoint import load_checkpoint, save_checkpoint
from gliomaseg.model.packaged import (DEFAULT_MODEL, INCOMPLETE_MODEL, INFO_FILE, MODELS_DIR, first_stage_folder,
                                      packaged_models, resolve_model)
from gliomaseg.model.run_folder import RunFolder
from gliomaseg.postprocessing.rules import PostprocessRules

SYNTHETIC_TEST_SEED = SYNTHETIC_SEED + 1
SYNTHETIC_TEST_CASES = 8


def _link_all(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for folder in find_case_folders(source):
        if not (target / folder.name).exists():
            (target / folder.name).symlink_to(folder.resolve(), target_is_directory=True)


def train_model(data: Path, work: Path, options: tuple[str, ...], synthetic: int, carved: int = 0) -> tuple[RunFolder, list[str], float, dict]:
    """``gliomaseg train`` on every real case, ``synthetic`` synthetic ones and ``carved`` cavities carved into each
    real case (seeded as the cross-validation carved its training cases); the run, the command (its folders
    written CASES and RUN), the seconds
    its epochs took (summed from metrics.csv, so a build resumed after a kill counts every piece) and where and
    when they ran (``work/trained_on.json``, written only by a call that trained, so a card rebuilt from a finished
    run on another machine or day still names the training's; a ``note`` added there, such as other jobs sharing the
    machine, goes into the card beside the time)."""
    cases = work / "cases"
    _link_all(data, cases)
    if synthetic:
        _link_all(synthetic_cases(work, synthetic), cases)
    if carved:
        write_carved_cases(data, work / "carved", carved, seed=0)
        _link_all(work / "carved", cases)
    run = RunFolder(work / "run")
    command = ["gliomaseg", "train", str(cases), "--out", str(run.path), "--preset", "cpu", "--val-fraction", "0", "--seed", "0",
               "--resume", *options]
    print(" ".join(command), file=sys.stderr, flush=True)
    epochs_before = len(run.history())
    subprocess.run([sys.executable, "-m", "gliomaseg", "-q", *command[1:]], check=True)
    record = work / "trained_on.json"
    if len(run.history()) > epochs_before or not record.exists():
        write_text_atomic(record, json.dumps({"machine": machine(), "date": date.today().isoformat()}) + "\n")
    # the card names what was trained on, not where it lay on the training machine
    shown = [{str(cases): "CASES", str(run.path): "RUN"}.get(word, word) for word in command]
    return run, shown, sum(float(row["seconds"]) for row in run.history()), json.loads(record.read_text())


def training_options(trained: Setup, fusion: str) -> list[str]:
    """``train`` options of the runs a setup ships (``trained``: a prediction-time variant's, the runs it reuses), with
    the variant's ``fusion`` in place of theirs, since the fusion is kept in the packaged config."""
    options = list(trained.options)
    if fusion and "--fusion" in options:
        options[options.index("--fusion") + 1] = fusion
    elif fusion:
        options += ["--fusion", fusion]
    return options


def first_stage_provenance(run: RunFolder) -> dict:
    """Where the rules of a two-stage run's first stage come from: the model it was trained over (``train --stage-one``),
    with what that model's own rules file says they were tuned on."""
    source = run.load_config().train.stage_one
    shipped = RunFolder(resolve_model(source)).rules_file
    tuned_on = json.loads(shipped.read_text()).get("tuned_on", {}) if shipped.exists() else {}
    return {"copied_from": source, **tuned_on}


def shipped_first_stage(run: RunFolder) -> str | None:
    """The packaged model a two-stage run was trained over (``train --stage-one NAME``), when the run's first stage is
    still exactly that model (the same weights and rules); None otherwise."""
    shipped = packaged_models().get(run.load_config().train.stage_one)
    if shipped is None:
        return None
    first = RunFolder(run.stage_one_dir)
    ours, theirs = load_checkpoint(first.checkpoint())["model"], load_checkpoint(shipped.run.checkpoint())["model"]
    same_weights = ours.keys() == theirs.keys() and all(torch.equal(ours[k].to(theirs[k].dtype), theirs[k]) for k in ours)
    return shipped.name if same_weights and first.rules() == shipped.run.rules() else None


def export(run: RunFolder, target: RunFolder, rules: PostprocessRules, provenance: dict) -> None:
    """The run cut to what prediction needs: float16 weights and the config in best.pt, config.json, the rules. A
    two-stage model's first stage (stage_one/) is named when it is a packaged model unchanged (stage_one_named:
    the wheel then holds its weights once), else cut the same way inside it, its rules named as its own."""
    state = load_checkpoint(run.checkpoint())
    weights = {k: v.half() if v.is_floating_point() else v for k, v in state["model"].items()}
    target.path.mkdir(parents=True, exist_ok=True)
    save_checkpoint({"model": weights, "config": state["config"], "epoch": state.get("epoch", 0)}, target.best_checkpoint)
    shutil.copyfile(run.config_file, target.config_file)
    target.save_rules(rules, provenance)
    first = RunFolder(run.stage_one_dir)
    if not first.best_checkpoint.exists():
        return
    shutil.rmtree(target.stage_one_dir, ignore_errors=True)  # a first stage kept by an earlier build, copied or named
    if shared := shipped_first_stage(run):
        target.stage_one_dir.mkdir()
        write_text_atomic(target.stage_one_named, json.dumps({"name": shared}) + "\n")
    else:
        export(first, RunFolder(target.stage_one_dir), first.rules(), first_stage_provenance(run))


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


@dataclass(frozen=True)
class Evidence:
    """What the card can say about the setup on real tumours, and where it comes from."""

    scores: dict  # model.json's "cross_validation": setup, source, folds, cases, dice and hd95 intervals per region
    how: str  # the card's paragraph on how the scores were measured
    rules: PostprocessRules  # what the packaged model's predictions get
    rules_provenance: dict
    worst: list[tuple[str, Path, str]]  # (case, its picture, its scores) of the worst held-out cases
    false_cavities: str = ""  # what the cross-validation saw of cavities predicted on real, pre-operative tumours
    carved_rc: str = ""  # RC on cavities carved into the held-out cases, for a setup trained with carved cases


def evidence_from_cross_validation(cv: dict, name: str, pictures: list[Path]) -> Evidence:
    """Setup ``name`` of ``results/real_cv.json``: nested scores, rules tuned on every held-out prediction, and
    ``pictures`` of its worst held-out cases (``real_cv_<case>.png``, as bench_real draws them)."""
    chosen, folds = cv["setups"][name], cv["settings"]["folds"]
    scores = {"setup": name, "source": "benchmarks/results/real_cv.json", "folds": folds, "cases": chosen["cases"],
              "label": f"{folds}-fold cross-validation of this setup over {chosen['cases']} real cases",
              "dice": {r: chosen["dice"]["nested"][r] for r in TUMOUR_REGIONS},
              "hd95": {r: chosen["hd95"]["nested"][r] for r in TUMOUR_REGIONS}}
    if name != cv["chosen"]:  # a model beside the default one: what it gives up on what the default model is for
        default = cv["setups"][cv["chosen"]]["per_case"]
        scores["versus_default"] = {"setup": cv["chosen"], "dice": {r: interval(
            [entry["nested"][r][0] - default[case]["nested"][r][0] for case, entry in chosen["per_case"].items()]) for r in TUMOUR_REGIONS}}
    if chosen.get("inputs"):  # a setup trained with modality dropout, scored on each input a clinic sends
        scores["inputs"] = {i: {"dice": {r: chosen["inputs"][i][r] for r in TUMOUR_REGIONS},
                                "change_from_full": {r: chosen["inputs_change_from_full"][i][r] for r in TUMOUR_REGIONS}}
                            for i in chosen["inputs"]}
    how = (f"The same setup ({name}: `{chosen['setup']}`) in {folds}-fold cross-validation by patient over the {chosen['cases']} real "
           f"cases: each case predicted by a model that never saw it, post-processing rules tuned on the other folds only, official "
           "BraTS 2024 lesion-wise protocol on the native grid. Mean over cases with a 95 % bootstrap interval over cases (RC left "
           "out: these cases have none; cavities predicted on them are under failure modes). The shipped model is trained on all "
           "of them. Every setup compared, per case: `benchmarks/results/real_cv.md` in the source repository.")
    setup = SETUPS[name]
    if setup.gate:  # the cross-validation's first stages were a twin's runs; the shipped one is the twin's setup on every case
        how += (f" Its first stage in each fold was {setup.stage_one}'s run, the setup of {setup.gate} trained again, and {setup.gate}'s "
                f"rules of the fold gated it; the shipped first stage is {setup.gate}'s setup trained on every case, with its own rules.")
    worst = []
    for picture in pictures:
        case = picture.name[len("real_cv_"):-len(".png")]
        nested = chosen["per_case"][case]["nested"]
        worst.append((case, picture, ", ".join(f"{r} {nested[r][0]:.2f}" for r in TUMOUR_REGIONS)))
    cavities = chosen["false_cavities"]["nested"]
    false_cavities = (f"In the cross-validation {cavities['cases']} of {cavities['of']} pre-operative cases were given a resection "
                      f"cavity they do not have (after post-processing; the largest {cavities['largest_ml']:.1f} mL): what the "
                      f"{'synthetic and carved' if 'carved_rc_dice' in chosen else 'synthetic'} cavities taught can be mistaken "
                      "for real tumour; on an exam known to be from before surgery, `predict --pre-operative` labels no cavity.")
    carved_rc = ""
    if "carved_rc_dice" in chosen:
        scores["carved_rc_dice"] = chosen["carved_rc_dice"]["nested"]
        rc = scores["carved_rc_dice"]
        carved_rc = (f"On a cavity carved into each of the {len(chosen['carved_rc_per_case'])} held-out cases of the same "
                     f"cross-validation (anatomy its run never saw; nested post-processing), RC lesion-wise Dice {rc['mean']:.3f} "
                     f"[{rc['low']:.3f}, {rc['high']:.3f}].")
    return Evidence(scores, how, PostprocessRules.from_dict(chosen["rules_all_cases"]),
                    {"source": f"every held-out prediction of the cross-validation of {name}", "cases": chosen["cases"]}, worst,
                    false_cavities, carved_rc)


def inputs_section(scores: dict) -> list[str]:
    """The card's scores per input a clinic sends (each sequence missing, T1c + FLAIR only), beside the full input."""
    if "inputs" not in scores:
        return []

    def cells(stats: dict) -> str:
        return " | ".join(f"{stats['dice'][r]['mean']:.3f} ({stats['change_from_full'][r]['mean']:+.3f} "
                          f"[{stats['change_from_full'][r]['low']:+.3f}, {stats['change_from_full'][r]['high']:+.3f}])"
                          for r in TUMOUR_REGIONS)
    return [
        "## Exams missing a sequence",
        "",
        "The same cross-validation with the held-out exams' sequences deleted (`predict` zero-fills them, as the model saw "
        "in training): lesion-wise Dice, nested post-processing (the rules tuned on full inputs), and in brackets the "
        "paired change from the same cases' full input with its 95 % bootstrap interval over cases.",
        "",
        "| input | " + " | ".join(TUMOUR_REGIONS) + " |",
        "|---|" + "---|" * len(TUMOUR_REGIONS),
        "| all four | " + " | ".join(f"{scores['dice'][r]['mean']:.3f}" for r in TUMOUR_REGIONS) + " |",
        *(f"| {name} (without {', '.join(INCOMPLETE_INPUTS[name])}) | {cells(stats)} |" for name, stats in scores["inputs"].items()),
        "",
    ]


def versus_default_section(info: dict) -> list[str]:
    """For a model beside the default one: its paired change from the default model's setup on complete exams, and
    when ``predict`` uses it."""
    versus = info["cross_validation"].get("versus_default")
    if not versus:
        return []
    if info["name"] == INCOMPLETE_MODEL:
        use = "`predict` without `--model` gives complete exams to the default model and only exams missing a sequence to this one"
    else:
        use = f"`predict` uses it only when asked (`--model {info['name']}`)" + (
            f", for a complete exam or one missing a sequence (without `--model`, `predict` gives the latter to {INCOMPLETE_MODEL})"
            if info.get("modality_dropout") else "")
    return [f"On complete exams, paired per case against the setup of the default model ({versus['setup']}, same folds, "
            "nested post-processing), its lesion-wise Dice changes by " + ", ".join(
                f"{r} {versus['dice'][r]['mean']:+.3f} [{versus['dice'][r]['low']:+.3f}, {versus['dice'][r]['high']:+.3f}]"
                for r in TUMOUR_REGIONS) + f": {use}.", ""]


def model_card(info: dict, evidence: Evidence) -> str:
    """MODEL_CARD.md from model.json's facts and the evidence on real tumours."""
    scores = evidence.scores
    training = info["training"]
    carved = training.get("carved_per_case", 0)
    table = _interval_table({"lesion-wise Dice": scores["dice"]}, 3) + _interval_table({"lesion-wise HD95 (mm)": scores["hd95"]}, 1)
    dropout = info.get("modality_dropout", 0)
    inputs = (f" Any of them but not all may be missing: it was trained with modality dropout {dropout:g} (each sequence blanked "
              "with that chance), and `predict` zero-fills a missing one and says so; below, what each missing sequence costs."
              if dropout else "")
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
        "(`gliomaseg prepare` makes them from raw DICOM or NIfTI)." + inputs + " Output: a label map on the input's grid: 1 NETC, "
        "2 SNFH, 3 ET, 4 RC.",
        f"Network: {info['network']}. Preprocessing: brain box (intensity threshold + largest component), each sequence clipped at its "
        f"1st/99th percentile and z-scored inside the brain, resized to {info['grid']}; probabilities are resized back to the "
        "brain box and turned into labels on the native grid, then cleaned by the post-processing rules in `postprocess.json`."
        + (f" {info['second_stage']}" if info.get("second_stage") else ""),
        "",
        "## Training data",
        "",
        f"- **{training['real_cases']} real, expert-labelled pre-operative glioma cases** from the BraTS challenges (13 of BraTS 2018, "
        "13 of BraTS 2021, 2 of BraTS 2023, re-hosted in public repositories; their labels converted to the 2024 scheme). "
        "**BraTS data terms apply**: research use, and cite Menze et al. 2015 (IEEE TMI), Bakas et al. 2017 (Sci Data) and "
        "2018 (arXiv:1811.02629), Baid et al. 2021 (arXiv:2107.02314). The weights are derived from these data and carry "
        "the same terms.",
        f"- **{training['synthetic_cases']} synthetic post-treatment cases** (`gliomaseg synth`, seed {SYNTHETIC_SEED}): "
        + ("no real case has a resection cavity, so **RC was learned from synthetic cases only**." if not carved else
           "no real case has a resection cavity."),
        *([f"- **{carved * training['real_cases']} cases carved from the real ones** (`gliomaseg synth --from`, seed 0, {carved} per "
           "case), for the second stage: a resection cavity carved where each real tumour was, residual enhancing tissue and the "
           "FLAIR signal around it kept; **RC was learned from these and the synthetic cases only**, the first stage's from the "
           "synthetic cases alone."] if carved else []),
        "",
        "## How it was trained",
        "",
        f"`{' '.join(training['command'])}` (CASES: a folder of the real{', carved' if carved else ''} and synthetic case folders; the cpu preset: "
        f"{info['recipe']}), {training['wall_min']:.1f} min of training on "
        f"{training['machine']}, {training['date']}" + (f" ({training['note']})" if training.get("note") else "")
        + f", gliomaseg {training['gliomaseg_version']}. "
        "`.venv/bin/python benchmarks/build_model.py --work W --data REAL_CASES"
        + ("" if "versus_default" not in scores and "second_stage" not in info
           else f" --setup {scores['setup']} --name {info['name']}")
        + (f" --stage-one {info['first_stage']}" if "first_stage" in info else "")
        + ("" if "versus_default" not in scores else " --cv-work CV_WORK")
        + "` rebuilds it, seeded (W outside the source tree "
        "keeps the run, so a killed build resumes).",
        "",
        "## Scores on real tumours",
        "",
        evidence.how,
        "",
        "| metric | " + " | ".join(TUMOUR_REGIONS) + " |",
        "|---|" + "---|" * len(TUMOUR_REGIONS),
        *table,
        "",
        f"These numbers: `{scores['source']}` in the source repository.",
        "",
        f"Resection cavity, on {SYNTHETIC_TEST_CASES} held-out synthetic post-treatment cases (seed {SYNTHETIC_TEST_SEED}), lesion-wise "
        "Dice: " + ", ".join(f"{r} {v:.3f}" for r, v in info["synthetic_test_dice"].items()) + ". " + (f"{evidence.carved_rc} " if evidence.carved_rc else "")
        + ("Synthetic and carved cavities" if evidence.carved_rc else "Synthetic cavities")
        + " are easier than real ones: treat RC on real post-operative scans as unvalidated.",
        "",
        *inputs_section(scores),
        *versus_default_section(info),
        "## Speed",
        "",
        info["speed"],
        "",
        "## Failure modes",
        "",
        "The worst held-out cases of the cross-validation above (ground truth left, prediction right, three planes through the lesion):",
        "",
        *(f"- {case}: {shown}\n\n  ![{case}](failures/{picture.name})\n" for case, picture, shown in evidence.worst),
        "What goes wrong: tumours without enhancement or with faint FLAIR signal are under-segmented or missed whole; "
        "thick-slice exams of BraTS 2013 (interpolated to 1 mm) are under-segmented; small cores (a few mL) are missed; "
        "a spurious speck far from the tumour counts as a false lesion under the lesion-wise protocol. Post-treatment "
        + ("anatomy (cavities, treatment effects) was seen only in synthetic cases." if not carved else
           "anatomy was seen only in synthetic cases and in cavities carved into pre-operative scans: real cavities (collapsed, "
           "blood-filled, with gliosis around them) and treatment effects may look otherwise.") + (f" {evidence.false_cavities}" if evidence.false_cavities else ""),
        "",
    ]
    return "\n".join(lines)


def first_stage_config(model: RunFolder) -> ExperimentConfig | None:
    """A two-stage model's first stage's config (None for a one-stage model)."""
    first = RunFolder(first_stage_folder(model))
    return first.load_config() if first.config_file.exists() else None


def _weights(model: RunFolder) -> int:
    return sum(v.numel() for v in load_checkpoint(model.best_checkpoint)["model"].values() if v.is_floating_point())


def _summary(model: RunFolder, synthetic: int, carved: int) -> str:
    config, first = model.load_config(), first_stage_config(model)
    dropout = config.train.modality_dropout
    carvings = f", {carved} resection {'cavity' if carved == 1 else 'cavities'} carved into each," if carved else ""
    trained = (f"trained on 28 real BraTS cases{carvings} and {synthetic} synthetic post-treatment ones"
               + (f", with modality dropout {dropout:g}: for exams missing a sequence" if dropout else ""))
    if first is None:
        return f"VNet3d on a {config.preprocess.size[0]}^3 grid of the brain box, {trained}"
    return (f"Two stages: VNet3d on a {first.preprocess.size[0]}^3 grid of the brain box finds the tumour ({config.train.stage_one}), "
            f"a second VNet3d segments it on the native 1 mm grid in {config.train.patch_size}^3 cubes; the second {trained}")


TARGET_WORDS = {"labels": "one softmax output per label (0-4)", "regions": "one sigmoid output per overlapping region (WT, TC, ET, RC)"}
"""What the card says of each ``TrainConfig.targets`` (gliomaseg.model.targets)."""


def _network(model: RunFolder) -> str:
    config, first = model.load_config(), first_stage_config(model)
    channels = ", ".join(("t1n", "t1c", "t2w", "t2f", *config.preprocess.extra_channels))
    shape = f"{config.preprocess.channels} input channels ({channels}), {TARGET_WORDS[config.train.targets]}"
    if first is None:
        return f"the recipe's VNet3d, {_weights(model):,} weights in float16, {shape}"
    cascade = ", the second stage also reading the first stage's probability of each target (cascade)" if config.train.cascade else ""
    return (f"two of the recipe's VNet3d, {_weights(RunFolder(first_stage_folder(model))):,} (first stage) and {_weights(model):,} "
            f"(second stage) weights in float16, {shape}{cascade}")


def _second_stage(config: ExperimentConfig) -> str:
    """The card's sentence on what the second stage does at prediction (gliomaseg.inference.two_stage)."""
    fused = ("the second stage's labels replace the first's" if config.train.fusion == "replace" else
             "the two stages' probabilities are averaged")
    cavity = (" (a resection cavity the second stage finds anywhere in what it read stands where the first stage saw no "
              "tumour, since the first stage learned cavities from synthetic heads only)" if config.train.fusion == "cavity" else "")
    return (f"The first stage's whole tumour, after its own post-processing, plus {MARGIN_MM:g} mm on each side is read again on the "
            f"native grid by the second stage (sliding window of {config.train.patch_size}^3 cubes, neighbours sharing "
            f"{OVERLAP:g} of a side); within {GATE_MM:g} mm of that "
            f"tumour {fused}, and beyond it the first stage's labels stand{cavity}. Where the first stage finds nothing, the second "
            "searches the whole brain box.")


def predict_timing(name: str) -> tuple[dict, str]:
    """The timing of model ``name`` and its table's name: ``results/predict.json`` (the default model's, kept there for
    the README) or, for a model beside it, ``results/predict_<name>.json``; the build stops when neither timed it."""
    for source in ("predict", f"predict_{name}"):
        path = RESULTS / f"{source}.json"
        if path.exists() and (result := json.loads(path.read_text())).get("model") == name:
            return result, f"{source}.md"
    sys.exit(f"build_model: neither results/predict.json nor results/predict_{name}.json timed {name}: run bench_predict.py "
             f"--model {name} (--results predict_{name} for a model beside the default) and build again (the run is kept)")


def speed_paragraph(predict_result: dict, table: str, journey: dict | None) -> str:
    """The card's speed paragraph, every number read from ``predict_result`` (a bench_predict result, whose table is
    ``results/<table>``) and ``journey`` when it timed the same model."""
    name = predict_result["model"]
    seconds = predict_result["ours"]["seconds"]
    headline = predict_result["headline"]
    text = (f"On {predict_result['machine']} (no GPU): {headline['s_per_case']:.1f} s per case on average over {len(seconds)} cases "
            f"({min(seconds.values()):.1f}-{max(seconds.values()):.1f} s; the first case of a process pays its one-time set-up), "
            f"peak memory {headline['peak_rss_gb']:.2f} GB, {headline['ratio']:.0f}x faster than MONAI's SegResNet sliding window "
            f"in the same run (`benchmarks/results/{table}`).")
    if journey and journey["model"] == name:
        steps = journey["steps"]
        text += (f" From a raw exam ({journey['machine']}): `prepare` {steps['prepare']['seconds']:.0f} s, then `predict --native` "
                 f"{steps['predict']['seconds']:.1f} s in its own process, imports and the return to the original grid included "
                 "(`benchmarks/results/journey.md`).")
    return text


def worst_pictures(cv: dict, name: str, cv_work: Path | None, data: Path, work: Path | None) -> list[Path]:
    """Pictures of setup ``name``'s worst held-out cases: results/' overlays for real_cv.json's chosen setup, else
    drawn into ``work``/worst from its held-out predictions in bench_real's ``cv_work``."""
    if name == cv["chosen"]:
        return [RESULTS / overlay for overlay in cv["overlays"]]
    if cv_work is None or work is None:
        sys.exit(f"build_model: {name} is not real_cv.json's chosen setup: give --cv-work and --work to draw its worst cases")
    drawn = work / "worst"
    drawn.mkdir(parents=True, exist_ok=True)
    return [drawn / p for p in draw_worst(cv["setups"][name], cv_work, name, data, len(cv["overlays"]), drawn)]


def ship_pictures(target: RunFolder, pictures: list[Path]) -> None:
    """The packaged model's failures/ holds ``pictures`` (drawn elsewhere) and nothing else: an earlier card's worst
    cases must not ship."""
    failures = target.path / "failures"
    shutil.rmtree(failures, ignore_errors=True)
    failures.mkdir()
    for picture in pictures:
        shutil.copyfile(picture, failures / picture.name)


def refresh_card(target: RunFolder, cv: dict, cv_work: Path | None, data: Path, work: Path | None) -> None:
    """The card and model.json of the packaged model ``target`` written again from ``cv`` (real_cv.json) without
    training: for a model beside the default one when the default changes. Its pictures stay when its worst cases are
    the same; its rules must be those the cross-validation tuned, or the weights' evidence is stale and it is rebuilt."""
    info = json.loads((target.path / INFO_FILE).read_text())
    name = info["cross_validation"]["setup"]
    if name not in cv["setups"]:
        sys.exit(f"build_model: {target.path.name} was built from {name}, which results/real_cv.json no longer holds")
    shipped = [target.path / "failures" / f"real_cv_{case}.png" for case in worst_cases(cv["setups"][name], len(cv["overlays"]))]
    kept = all(p.exists() for p in shipped)
    pictures = shipped if kept else worst_pictures(cv, name, cv_work, data, work)
    evidence = evidence_from_cross_validation(cv, name, pictures)
    if evidence.rules != target.rules():
        sys.exit(f"build_model: {target.rules_file} differs from the rules real_cv.json tuned for {name}: rebuild the model")
    if not kept:
        ship_pictures(target, pictures)
    info["cross_validation"] = evidence.scores
    write_text_atomic(target.path / INFO_FILE, json.dumps(info, indent=2) + "\n")
    write_text_atomic(target.model_card, model_card(info, evidence))
    print(json.dumps({"model": str(target.path), "card": "written again", "setup": name}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="kept training run and synthetic cases (outside the work tree)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--name", default=DEFAULT_MODEL)
    parser.add_argument("--setup", choices=list(SETUPS), help="the cross-validated setup to train (default: real_cv.json's chosen one)")
    parser.add_argument("--cv-work", type=Path, help="bench_real's --work, whose held-out predictions draw the worst cases of a "
                                                     "setup that is not real_cv.json's chosen one (its pictures are not in results/)")
    parser.add_argument("--synthetic", type=int, help="synthetic cases added (default: the setup's)")
    parser.add_argument("--stage-one", help="a two-stage setup's first stage: the packaged model (or run folder) of its first "
                                            "stage's setup, which the second stage is trained over and ships with")
    parser.add_argument("--card-only", action="store_true", help="train nothing: write the card of the packaged model --name "
                                                                 "again from the current results/real_cv.json")
    args = parser.parse_args()
    cv = json.loads((RESULTS / "real_cv.json").read_text())
    if args.card_only:
        target = RunFolder(MODELS_DIR / args.name)
        if not (target.path / INFO_FILE).exists():
            sys.exit(f"build_model: no packaged model {args.name} to write the card of ({target.path / INFO_FILE} is missing)")
        refresh_card(target, cv, args.cv_work, args.data, args.work)
        return
    if args.work is None:
        parser.error("--work is required to build a model")
    if not args.data.is_dir():
        sys.exit(f"build_model: no real cases at {args.data}")
    name = args.setup or cv["chosen"]
    if name not in cv["setups"]:
        sys.exit(f"build_model: {name} is not in results/real_cv.json (bench_real.py summarise --setups {name})")
    pictures = worst_pictures(cv, name, args.cv_work, args.data, args.work)
    setup = SETUPS[name]
    trained = SETUPS[setup.reuses] if setup.reuses else setup  # a prediction-time variant ships its runs' training
    if setup.tta:
        sys.exit(f"build_model: {name} predicts with test-time flips, which a packaged model cannot ask for")
    options = training_options(trained, setup.fusion)
    if trained.stage_one:
        if not args.stage_one:
            sys.exit(f"build_model: {name} is a second stage: give --stage-one, the shipped model of {trained.stage_one}'s setup")
        options += ["--stage-one", args.stage_one]
    synthetic = args.synthetic if args.synthetic is not None else trained.synthetic
    run, command, seconds, trained_on = train_model(args.data, args.work, tuple(options), synthetic, trained.carved)
    evidence = evidence_from_cross_validation(cv, name, pictures)
    target = RunFolder(MODELS_DIR / args.name)
    export(run, target, evidence.rules, evidence.rules_provenance)
    # before the synthetic scoring: a predict.json of another model stops the build here, once the exported model
    # exists for bench_predict to time
    speed = speed_paragraph(*predict_timing(args.name),
                            json.loads(journey.read_text()) if (journey := RESULTS / "journey.json").exists() else None)
    config = run.load_config()
    ship_pictures(target, pictures)
    dropout = config.train.modality_dropout
    info = {
        "name": args.name,
        "summary": _summary(target, synthetic, trained.carved),
        "modality_dropout": dropout,
        "network": _network(target),
        "grid": "x".join(map(str, (first_stage_config(target) or config).preprocess.size)),
        **({"first_stage": config.train.stage_one, "second_stage": _second_stage(config)} if config.train.stage_one else {}),
        "recipe": (f"{config.train.epochs} epochs x {config.train.steps_per_epoch} steps of batch {config.train.batch_size}, AdamW lr "
                   f"{config.train.lr:g} cosine, Dice + cross-entropy"
                   + (f" + {config.train.region_dice:g} x Dice over TC and WT" if config.train.region_dice else "")
                   + f", {config.train.augment} augmentation"),
        "training": {"command": command, "wall_min": round(seconds / 60, 1), **trained_on,
                     "gliomaseg_version": __version__, "torch": torch.__version__, "python": platform.python_version(),
                     "real_cases": len(find_case_folders(args.data)), "synthetic_cases": synthetic, "carved_per_case": trained.carved},
        "cross_validation": evidence.scores,
        "synthetic_test_dice": synthetic_scores(target, args.work),
        "speed": speed,
    }
    write_text_atomic(target.path / INFO_FILE, json.dumps(info, indent=2) + "\n")
    write_text_atomic(target.model_card, model_card(info, evidence))
    print(json.dumps({"model": str(target.path), "train_min": info["training"]["wall_min"], "synthetic": info["synthetic_test_dice"]}))


if __name__ == "__main__":
    main()
