"""Which setup does best on real tumours: cross-validation over the real BraTS cases, every case held out once.

Two steps, so hours of training can be cut into pieces (a stop ends a session's processes):

``bench_real.py run --work W [--setups A B ...]`` trains and predicts whatever is not finished yet.
For each setup and each of ``--folds`` patient-wise folds (seeded), ``gliomaseg train`` runs on the
other folds' cases, exactly as a user runs it (its own process, ``--preset cpu`` plus the setup's
options, ``--val-fraction 0``: every training case is trained on, the schedule is fixed, the last
checkpoint is the model), then ``predict`` segments the held-out fold from its raw folders without
post-processing. A killed run is resumed from its last checkpoint (``train --resume``); a
finished fold is skipped. Runs live in ``W/<setup>/fold<K>/``, outside the work tree.

``bench_real.py screen --work W --setups S`` scores the folds of S done so far against preset64's per-case
scores in ``results/real_cv.json`` (raw predictions, paired per case; ``--baseline`` another setup): to drop a
candidate early, before all its folds are run. ``--inputs-baseline`` pairs a setup's incomplete inputs with another's
on the same input (the model for incomplete exams). Writes ``results/real_screen.{json,md}``.

Every finished fold is archived into ``results/real_cv_folds/`` (its held-out predictions, a few kB a case:
``fold_archive``), and ``run``, ``screen`` and ``summarise`` rebuild the folds this machine lacks from there, so
one setup's folds can be run in different sessions, on different machines (``run --only K``).

``bench_real.py summarise --work W`` trains nothing. It scores every held-out prediction with the
official BraTS 2024 lesion-wise protocol on the native grid, then the same predictions after
post-processing rules tuned *without* the scored fold (for fold K on the other folds'
held-out predictions: nested, so no case is scored with rules it helped choose). Per setup and
region: the pooled mean lesion-wise Dice and HD95 over all cases with a 95 % bootstrap interval
over cases, per-case tables, and overlays of the worst cases (ground truth left, prediction
right). Writes ``results/real_cv.{json,md}`` and ``results/real_cv_<case>.png``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from common import RESULTS, cpu_name, write_results
from fold_archive import archive_fold, archive_path, restore_fold

from gliomaseg.data.carved_cavities import write_carved_cases
from gliomaseg.data.splits import kfold_by_patient
from gliomaseg.data.synthetic import write_synthetic_dataset
from gliomaseg.evaluation.protocol import OFFICIAL
from gliomaseg.inference.predictor import load_model, predict
from gliomaseg.io.cases import find_case_folders, load_case, read_case_folder
from gliomaseg.labels import LABELS, REGIONS
from gliomaseg.postprocessing.rules import PostprocessRules, save_rules
from gliomaseg.postprocessing.tuning import GRID, ValidationCase, load_validation_cases, starting_rules, tune_rules
from gliomaseg.preprocessing.cache import cache_config, read_cached_case
from gliomaseg.measurement.volumes import label_volumes_ml
from gliomaseg.model.loading import LoadedModel
from gliomaseg.visualization.overlays import plot_overlay

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "real-brats"

SHIPPED_SYNTHETIC = 14
"""Synthetic post-treatment cases the shipped model trains with (no real case has a resection cavity):
every setup trains with them by default, so the cross-validation measures a setup as it would ship."""


FUSION_WORDS = {"cavity": "the two stages averaged, stage two's cavity standing in its window where stage one saw no tumour"}
"""How a setup's description names a fusion that is not "the two stages fused by their <fusion>"."""


@dataclass(frozen=True)
class Setup:
    """One way of training: options added to ``train --preset cpu --val-fraction 0``, and how many
    synthetic post-treatment cases (``gliomaseg synth``, seeded) join every fold's training cases."""

    options: tuple[str, ...] = ()
    synthetic: int = SHIPPED_SYNTHETIC
    carved: int = 0
    """Cavities carved into each of the fold's own training cases (``gliomaseg synth --from``), trained on beside them."""
    incomplete: bool = False
    """Also predict the held-out cases with sequences removed (INCOMPLETE_INPUTS): for models trained with modality dropout."""
    stage_one: str = ""
    """A second stage (``train --stage-one``) over this setup's run of the same fold, which must be on this machine."""
    reuses: str = ""
    """Train nothing: predict with this setup's run of the same fold, which must be on this machine."""
    fusion: str = ""
    """A two-stage model's ``TrainConfig.fusion`` at prediction, in place of the one it was trained with."""
    tta: bool = False
    """Predict with the mean over the 8 axis flips (``predict --tta``)."""
    first: str = ""
    """With ``reuses`` (a two-stage setup): this setup's run of the fold as the first stage, in place of the one it trained over."""
    ensemble: tuple[str, ...] = ()
    """With ``reuses``: these setups' runs of the fold predict beside it, as one ensemble (their probabilities averaged)."""
    gate: str = ""
    """A two-stage setup's first stage is gated by this setup's nested rules of the fold in place of its own: for a
    first stage trained again on a few folds (its other folds not run), the rules of the setup it is a twin of."""
    pre_operative: bool = False
    """Predict the held-out cases as exams from before surgery (``predict --pre-operative``: no voxel labelled RC)."""

    def describe(self) -> str:
        parts = [" ".join(self.options) or "(the preset)"] + ([f"+ {self.synthetic} synthetic cases"] if self.synthetic else [])
        parts += [f"+ {self.carved} carved case(s) per training case"] if self.carved else []
        parts += [f"as the second stage over {self.stage_one}'s run of the fold"] if self.stage_one else []
        if self.reuses:
            parts = [f"{self.reuses}'s runs"]
            parts += [f"with {self.first}'s run of the fold as the first stage"] if self.first else []
            parts += [FUSION_WORDS.get(self.fusion, f"the two stages fused by their {self.fusion}")] if self.fusion else []
            parts += [f"averaged with {' and '.join(self.ensemble)}'s runs"] if self.ensemble else []
        parts += ["predicted with the 8 axis flips"] if self.tta else []
        parts += ["predicted as pre-operative exams (no cavity labelled)"] if self.pre_operative else []
        return ", ".join(parts) if self.reuses else " ".join(parts)


SETUPS: dict[str, Setup] = {
    "preset64": Setup(),
    "sub64": Setup(("--extra-channel", "t1c-t1n")),
    "regions64": Setup(("--targets", "regions")),
    "patch96": Setup(("--size", "96", "--patch-size", "64")),
    "grid96": Setup(("--size", "96")),
    "long64": Setup(("--epochs", "160")),
    "real64": Setup(synthetic=0),
    "carved64": Setup(synthetic=0, carved=1),
    "carvedsyn64": Setup(carved=1),
    "dropout64": Setup(("--modality-dropout", "0.2"), incomplete=True),
    "transplant64": Setup(("--transplant", "0.5")),
    "lean64": Setup(("--model", "vnet3d-lean")),
    "short64": Setup(("--epochs", "20")),
    "twostage64": Setup(("--model", "vnet3d-lean"), stage_one="lean64"),
    "preset64b": Setup(),
    "stagetwo64": Setup(stage_one="preset64b"),
    "stagetwo64mean": Setup(synthetic=0, reuses="stagetwo64", fusion="mean"),
    "preset64tta": Setup(synthetic=0, reuses="preset64b", tta=True),
    "carvedtwo64": Setup(synthetic=0, reuses="stagetwo64", fusion="mean", first="carvedsyn64"),
    "cascade64": Setup(("--cascade",), stage_one="preset64b"),
    "cascade64mean": Setup(synthetic=0, reuses="cascade64", fusion="mean"),
    "cascade64long": Setup(("--cascade", "--fusion", "mean", "--epochs", "80"), stage_one="preset64b"),
    "cascadecarved64": Setup(("--cascade", "--fusion", "mean"), carved=1, stage_one="preset64b"),
    "cascadecarved64cavity": Setup(synthetic=0, carved=1, reuses="cascadecarved64", fusion="cavity"),
    "cascadecarvedregion64": Setup(("--cascade", "--fusion", "mean", "--region-dice", "1"), carved=1, stage_one="preset64b"),
    "cascadecarvedsub64": Setup(("--cascade", "--fusion", "mean", "--extra-channel", "t1c-t1n"), carved=1, stage_one="preset64b"),
    "transplantcarved64": Setup(synthetic=0, carved=1, reuses="cascadecarved64", fusion="mean", first="transplant64"),
    "cascadecarved64s1": Setup(("--cascade", "--fusion", "mean", "--seed", "1"), carved=1, stage_one="preset64b"),
    "cascadecarved64x2": Setup(synthetic=0, carved=1, reuses="cascadecarved64", fusion="mean", ensemble=("cascadecarved64s1",)),
    "cascadecarved64tta": Setup(synthetic=0, carved=1, reuses="cascadecarved64", fusion="mean", tta=True),
    "dropout64b": Setup(("--modality-dropout", "0.2")),
    "cascadecarveddrop64": Setup(("--cascade", "--fusion", "mean", "--modality-dropout", "0.2"), carved=1, stage_one="dropout64b",
                                 incomplete=True, gate="dropout64"),
    "cascadecarved2drop64": Setup(("--cascade", "--fusion", "mean", "--modality-dropout", "0.2"), carved=2, stage_one="dropout64b",
                                  incomplete=True, gate="dropout64"),
    "cascadecarveddrop64cavity": Setup(synthetic=0, carved=1, reuses="cascadecarveddrop64", fusion="cavity", gate="dropout64"),
    "cascadecarved2drop64cavity": Setup(synthetic=0, carved=1, reuses="cascadecarved2drop64", fusion="cavity", gate="dropout64"),
    "patch48": Setup(("--patch-size", "48")),
    "patch48uniform": Setup(("--patch-size", "48", "--tumour-cubes", "0")),
    "carveddrop64": Setup(("--modality-dropout", "0.2"), carved=1),
    "carvedcascade64": Setup(synthetic=0, carved=1, reuses="cascadecarved2drop64", first="carveddrop64", incomplete=True),
    "cascadecarved2drop64preop": Setup(synthetic=0, reuses="cascadecarved2drop64", gate="dropout64", pre_operative=True),
    "carvedcascade64preop": Setup(synthetic=0, reuses="cascadecarved2drop64", first="carveddrop64", pre_operative=True),
}
"""Setup name -> how it differs from ``train --preset cpu --val-fraction 0`` (the preset: 64^3, 40 epochs of
32 steps of batch 2, AdamW 1e-3 cosine, multisite augmentation, label targets) plus the shipped
synthetic cases; ``real64`` leaves those out, to see what they cost on real tumours; ``carved64`` learns the cavity
from the fold's own training cases with a cavity carved in (never from a held-out patient's anatomy) instead, and
``carvedsyn64`` from both.
Every fold with carved training cases also carves one into each held-out case (``held_out_carved``) and predicts
it, so the cavity is scored on anatomy the model never saw. ``dropout64`` blanks each sequence of a training sample
with probability 0.2 (never all four) and is scored on every input a clinic sends (INCOMPLETE_INPUTS). ``transplant64`` pastes another training case's
tumour into half the samples' brains (gliomaseg.training.tumour_transplant). ``lean64`` trains ``vnet3d-lean``
(8 channels at full resolution instead of 16: a third cheaper a step on AVX2 cores); ``short64`` the preset's
network and steps but 20 epochs instead of 40 (half the run, annealed over it). ``twostage64`` trains a
second stage on 64^3 cubes of the native 1 mm grid (``vnet3d-lean``, the preset's steps) over lean64's run of the
same fold, so its paired change from lean64 is what the second stage adds (gliomaseg.inference.two_stage);
``preset64b`` is the shipped setup trained again on another machine: the run-to-run noise, and the first stage of
``stagetwo64``, the second stage as twostage64 but full-width (VNet3d); ``stagetwo64mean`` predicts with
stagetwo64's runs, averaging the two stages near the tumour instead of taking the second's; ``preset64tta``
predicts with preset64b's runs, averaging over the 8 axis flips of each case (test-time augmentation);
``carvedtwo64`` is stagetwo64mean over carvedsyn64's run of the fold instead (a second stage does not depend on the
first one's weights: it is trained on cubes of the ground truth's surroundings); ``cascade64`` is stagetwo64 with
the first stage's probabilities as extra inputs (``train --cascade``, nnU-Net's cascade), ``cascade64mean`` its
runs with the two stages averaged; ``cascade64long`` trains that second stage twice as long (80 epochs, 2,560 steps);
``cascadecarved64`` trains it (cascade64mean's second stage) with a cavity carved into each of the fold's training
cases as well, over preset64b's first stages, which learned the cavity from synthetic heads only;
``cascadecarved64cavity`` predicts with its runs, letting the second stage's cavity stand in its window wherever
the first stage saw no tumour (``--fusion cavity``), where the first, blind to carved cavities, had gated and halved it;
``cascadecarvedregion64`` trains cascadecarved64's second stage with a Dice over TC and WT added to its loss
(``--region-dice 1``), aimed at the core it calls oedema; ``cascadecarvedsub64`` gives that second stage the
T1c - T1n subtraction as a fifth sequence (``--extra-channel t1c-t1n``, as the 2024 runner-up did), where
enhancement stands out from tissue bright on both; ``transplantcarved64`` predicts with cascadecarved64's second
stages over transplant64's first stages (trained with tumour transplants) instead of preset64b's;
``cascadecarved64s1`` trains cascadecarved64's second stage again with another seed (initialisation, sampling and
augmentation), and ``cascadecarved64x2`` predicts with both second stages as one ensemble, their probabilities averaged;
``cascadecarved64tta`` predicts with cascadecarved64's runs, both stages averaged over the 8 axis flips (``predict --tta``);
``dropout64b`` trains dropout64 again (its runs are the first stages of the next setup, and dropout64's are gone), and
``cascadecarveddrop64`` is cascadecarved64's second stage trained with dropout64's modality dropout over it, gated by
dropout64's nested rules: meant as one two-stage model for complete and incomplete exams, scored on every input a clinic
sends; it costs the complete exam more than the incomplete-exam issue allows, so it ships only for incomplete exams
(benchmark-notes); ``cascadecarved2drop64`` trains that second stage with two cavities carved into each training case
instead of one (the carved cases added more to the core's border than to the cavity), over the same first stages;
``cascadecarveddrop64cavity`` and ``cascadecarved2drop64cavity`` predict complete exams with those runs as
cascadecarved64cavity does (``--fusion cavity``); ``patch48`` trains the preset on random 48^3 cubes of its 64^3 grid (half
of them centred on tumour, ``--patch-size 48``: 0.4 of a step's voxels, for AVX2 cores) and predicts by sliding window;
``patch48uniform`` centres none of them on tumour (``--tumour-cubes 0``), the whole grid's share of tumour."""

INCOMPLETE_INPUTS: dict[str, tuple[str, ...]] = {
    "no-t1n": ("t1n",), "no-t1c": ("t1c",), "no-t2w": ("t2w",), "no-t2f": ("t2f",), "t1c+t2f": ("t1n", "t2w"),
}
"""Input name -> the sequences removed from every held-out case: each one missing, and T1c + FLAIR only."""

SYNTHETIC_SEED = 2024


def _linked_cases(data: Path, case_ids: list[str], root: Path) -> Path:
    """A folder of links to some of the case folders, so a command sees only them."""
    root.mkdir(parents=True, exist_ok=True)
    for folder in find_case_folders(data):
        link = root / folder.name
        if folder.name in case_ids and not link.exists():
            link.symlink_to(folder.resolve(), target_is_directory=True)
    return root


def without_sequences(cases: Path, removed: tuple[str, ...], root: Path) -> Path:
    """Links to every file of the case folders under ``cases`` except the ``removed`` sequences (the ground truth stays)."""
    for folder in find_case_folders(cases):
        target = root / folder.name
        target.mkdir(parents=True, exist_ok=True)
        for path in folder.resolve().iterdir():
            if not any(path.name == f"{folder.name}-{m}.nii.gz" for m in removed) and not (target / path.name).exists():
                (target / path.name).symlink_to(path)
    return root


def _record_seconds(fold_dir: Path, step: str, seconds: float, cpu: str | None = None) -> None:
    """Add ``seconds`` to the step's wall clock in timing.json (a resumed step adds its pieces), and the CPU it ran
    on (``cpu``, else this machine's) to the step's CPUs (``"cpu"``: a step resumed on another kind of machine names both)."""
    path = fold_dir / "timing.json"
    timing = json.loads(path.read_text()) if path.exists() else {}
    timing[step] = timing.get(step, 0.0) + seconds
    cpus = timing.setdefault("cpu", {})
    cpus[step] = " + ".join(sorted({*filter(None, cpus.get(step, "").split(" + ")), cpu or cpu_name()}))
    path.write_text(json.dumps(timing, indent=2) + "\n")


def training_cpus(timing: dict) -> str:
    """The CPUs one fold's training ran on (its timing.json), or "not recorded" for a fold from before it was."""
    return timing.get("cpu", {}).get("train_s", "not recorded")


def trained_on(timing: list[dict]) -> str:
    """The CPUs a setup's folds trained on (from their timing.json)."""
    return " + ".join(sorted({cpu for t in timing for cpu in training_cpus(t).split(" + ")}))


def folds_of(data: Path, folds: int, seed: int) -> list[dict[str, list[str]]]:
    """The patient-wise folds: ``val`` is the held-out part of each."""
    return kfold_by_patient([f.name for f in find_case_folders(data)], folds, seed)


def _carve_held_out(held_out: Path, folder: Path, seed: int) -> list[Path]:
    """One cavity carved into each held-out case (seeded apart from the training cases' carvings)."""
    return write_carved_cases(held_out, folder, 1, seed=seed + 1)


def synthetic_cases(work: Path, count: int) -> Path:
    """``count`` synthetic post-treatment cases (seeded), made once in ``work/synthetic-<count>``."""
    folder = work / f"synthetic-{count}"
    if not (folder / "done").exists():
        write_synthetic_dataset(folder, count, seed=SYNTHETIC_SEED, workers=2, quiet=True)
        (folder / "done").write_text("")
    return folder


def run_fold(data: Path, setup: str, fold: int, splits: list[dict[str, list[str]]], work: Path, seed: int) -> None:
    """Train (or resume) one setup on one fold's training cases, then predict its held-out cases. A two-stage model's
    first stage is gated by the rules it would ship with: tuned on its setup's other folds (which must be done)."""
    split = splits[fold]
    fold_dir = work / setup / f"fold{fold}"
    if (fold_dir / "done.json").exists():
        return
    if archive_path(RESULTS, setup, fold).exists():  # run by an earlier session: scored from its archive
        restore_fold(archive_path(RESULTS, setup, fold), fold_dir, partial(_linked_cases, data), partial(_carve_held_out, seed=seed))
        return
    spec = SETUPS[setup]
    held_out = _linked_cases(data, split["val"], fold_dir / "held_out")
    if spec.reuses:
        _record_reused_training(fold_dir, setup)
    else:
        _train_fold(data, setup, fold, split, work, seed)
    started = time.perf_counter()
    models = prediction_models(work, setup, fold, len(splits))
    predict(held_out, fold_dir / "pred", models, quiet=True, fail_fast=True, flip_tta=spec.tta, pre_operative=spec.pre_operative)
    _record_seconds(fold_dir, "predict_s", time.perf_counter() - started)
    if spec.carved:
        _carve_held_out(held_out, fold_dir / "held_out_carved", seed)
        predict(fold_dir / "held_out_carved", fold_dir / "pred_carved", models, quiet=True, fail_fast=True, flip_tta=spec.tta)
    if spec.incomplete:
        for name, removed in INCOMPLETE_INPUTS.items():
            folder = without_sequences(held_out, removed, fold_dir / f"held_out_{name}")
            predict(folder, fold_dir / f"pred_{name}", models, quiet=True, fail_fast=True, flip_tta=spec.tta,
                    pre_operative=spec.pre_operative)
    (fold_dir / "done.json").write_text(json.dumps({"setup": setup, "fold": fold, "setup_spec": spec.describe(), **split}, indent=2) + "\n")
    archive_fold(fold_dir, archive_path(RESULTS, setup, fold), fold_box_fraction(fold_dir, setup))


def _train_fold(data: Path, setup: str, fold: int, split: dict[str, list[str]], work: Path, seed: int) -> None:
    """``gliomaseg train`` on the fold's training cases into the fold's ``run`` folder (resumed where a killed run left off)."""
    spec, fold_dir = SETUPS[setup], work / setup / f"fold{fold}"
    train_dir = _linked_cases(data, split["train"], fold_dir / "train")
    if spec.carved:
        carved = fold_dir / "carved"
        write_carved_cases(_linked_cases(data, split["train"], fold_dir / "train_hosts"), carved, spec.carved, seed=seed)
        _linked_cases(carved, [f.name for f in find_case_folders(carved)], train_dir)
    if spec.synthetic:
        synthetic = synthetic_cases(work, spec.synthetic)
        _linked_cases(synthetic, [f.name for f in find_case_folders(synthetic)], train_dir)
    run_dir = fold_dir / "run"
    options = list(spec.options)
    if spec.stage_one:
        first = _stage_one_run(fold_dir, spec)
        if not (first / "best.pt").exists():
            raise SystemExit(f"{setup} fold {fold}: needs {spec.stage_one}'s run of the fold on this machine ({first})")
        options += ["--stage-one", str(first)]
    command = [sys.executable, "-m", "gliomaseg", "-q", "train", str(train_dir), "--out", str(run_dir), "--preset", "cpu",
               "--val-fraction", "0", "--seed", str(seed), "--resume", *options]
    print(f"[{time.strftime('%H:%M:%S')}] {setup} fold {fold}: {' '.join(command[3:])}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        subprocess.run(command, check=True)
    finally:
        _record_seconds(fold_dir, "train_s", time.perf_counter() - started)


def _record_reused_training(fold_dir: Path, setup: str) -> None:
    """Checks that the runs of the fold that ``setup`` predicts with but did not train (:func:`trained_setups`) are
    done; their training time, added up, is recorded as its own."""
    reused = [fold_dir.parent.parent / name / fold_dir.name for name in trained_setups(setup)]
    for folder in reused:
        if not (folder / "done.json").exists() or not (folder / "run").is_dir():
            raise SystemExit(f"{fold_dir}: needs {folder.parent.name}'s trained run of the fold on this machine ({folder})")
    if not (fold_dir / "timing.json").exists():
        for folder in reused:
            timing = json.loads((folder / "timing.json").read_text())
            _record_seconds(fold_dir, "train_s", timing["train_s"], training_cpus(timing))


def trained_setups(setup: str) -> tuple[str, ...]:
    """The setups whose runs of a fold ``setup`` predicts with: its own, or those it reuses (an ensemble's, all)."""
    spec = SETUPS[setup]
    return (spec.reuses, *spec.ensemble) if spec.reuses else (setup,)


def prediction_models(work: Path, setup: str, fold: int, folds: int) -> list[LoadedModel]:
    """The runs ``setup`` predicts fold ``fold``'s held-out cases with, unprocessed: with its fusion, and a
    two-stage run's first stage (``first``'s run of the fold, else the one it trained over) gated by that stage's
    nested rules. Several are an ensemble."""
    spec, models = SETUPS[setup], []
    for trained in trained_setups(setup):
        model = load_model(work / trained / f"fold{fold}" / "run", "cpu", postprocess=False)
        if spec.fusion:
            model.config = replace(model.config, train=replace(model.config.train, fusion=spec.fusion))
        if model.stage_one is not None:
            first = spec.first or SETUPS[trained].stage_one
            if spec.first:
                model.stage_one = load_model(work / first / f"fold{fold}" / "run", "cpu", postprocess=False)
            model.stage_one.rules = nested_rules(work, spec.gate or first, fold, folds)
        models.append(model)
    return models


TUMOUR_REGIONS = [r for r in REGIONS if r != "RC"]
"""What the real cases can score: they are pre-operative, so RC is 1 (both empty) unless a cavity is predicted."""
BOOTSTRAP = 10_000


def interval(values: list[float], seed: int = 0) -> dict[str, float]:
    """Mean and 95 % percentile bootstrap interval of the mean, resampling cases."""
    data = np.asarray(values, dtype=float)
    means = data[np.random.default_rng(seed).integers(0, len(data), (BOOTSTRAP, len(data)))].mean(axis=1)
    return {"mean": round(float(data.mean()), 4), "low": round(float(np.percentile(means, 2.5)), 4),
            "high": round(float(np.percentile(means, 97.5)), 4)}


CORE_LABELS = {LABELS[label]: label for label in REGIONS["TC"]}
"""The tumour core's labels, whose voxels :func:`core_voxels_predicted` follows into the prediction."""


def core_voxels_predicted(prediction: np.ndarray, truth: np.ndarray) -> dict[str, list[int]]:
    """For each core label of the ground truth, how many of its voxels the prediction labels 0, 1, 2, 3, 4: where
    lesion-wise TC and NETC are lost beyond false lesions (core read as oedema, or missed)."""
    return {name: np.bincount(prediction[truth == label], minlength=len(LABELS)).tolist() for name, label in CORE_LABELS.items()}


def _case_scores(cases: list[ValidationCase], rules: PostprocessRules) -> tuple[dict[str, dict], dict[str, dict]]:
    """Per case and region, [lesion-wise Dice, lesion-wise HD95] after ``rules``; and per case the volume (mL) of
    predicted resection cavity, every one of which is false on these pre-operative cases, and the labels given to
    the ground truth's core voxels (:func:`core_voxels_predicted`)."""
    scores, found = {}, {}
    for case in cases:
        prediction = rules.apply(case.prediction)
        rows = OFFICIAL.objective_scores(prediction, case.truth, case.spacing)
        scores[case.case_id] = {region: [round(rows[region][0], 4), round(rows[region][1], 2)] for region in REGIONS}
        found[case.case_id] = {"cavity_ml": round(label_volumes_ml(prediction, case.spacing)["RC"], 2),
                               "core_voxels": core_voxels_predicted(prediction, case.truth)}
    return scores, found


def carved_rc(fold_dir: Path, rules: PostprocessRules) -> dict[str, tuple[float, float]]:
    """Each carved held-out case of the fold: its RC lesion-wise Dice raw, and after ``rules``."""
    cases = load_validation_cases(fold_dir / "pred_carved", fold_dir / "held_out_carved")
    (raw, _), (cleaned, _) = _case_scores(cases, PostprocessRules()), _case_scores(cases, rules)
    return {case_id: (raw[case_id]["RC"][0], cleaned[case_id]["RC"][0]) for case_id in raw}


def core_shares(per_case: dict[str, dict]) -> dict[str, list[float]] | None:
    """Pooled over the cases (nested rules): the share of each core label's ground-truth voxels predicted 0..4;
    None for a summary made before it was recorded."""
    if not all("core_voxels" in entry for entry in per_case.values()):
        return None
    totals = {name: np.sum([entry["core_voxels"][name] for entry in per_case.values()], axis=0) for name in CORE_LABELS}
    return {name: [round(float(v), 4) for v in counts / max(counts.sum(), 1)] for name, counts in totals.items()}


def cavity_count(volumes: list[float]) -> dict:
    """How many of these pre-operative cases' predicted cavity volumes (mL) are not 0, and the largest."""
    return {"cases": sum(v > 0 for v in volumes), "of": len(volumes), "largest_ml": max(volumes)}


def false_cavities(per_case: dict[str, dict], kind: str) -> dict:
    """How many pre-operative cases got a resection cavity (``kind``: raw or nested), and the largest one: the
    synthetic cavities the model learned RC from can leak onto real necrosis."""
    return cavity_count([entry["cavity_ml"][kind] for entry in per_case.values()])


def box_fraction(run_dir: Path) -> float:
    """The run's mean brain box over its grid, in voxels (what ``train`` starts tuning from), from its cache."""
    cache = run_dir / "cache"
    boxes = [np.prod(read_cached_case(meta.parent).geometry.box_shape) for meta in cache.glob("*/meta.json")]
    return float(np.mean(boxes) / np.prod(cache_config(cache).size))


def _stage_one_run(fold_dir: Path, spec: Setup) -> Path:
    return fold_dir.parent.parent / spec.stage_one / fold_dir.name / "run"


def fold_box_fraction(fold_dir: Path, setup: str) -> float:
    """:func:`box_fraction` of the fold's run, or the one its done.json recorded (a restored fold, or a run whose
    cache was deleted to free the disk); a second stage's is its first stage's, whose grid its specks come from."""
    done = fold_dir / "done.json"
    if done.exists() and "box_fraction" in (recorded := json.loads(done.read_text())):
        return recorded["box_fraction"]
    spec, folds = SETUPS[setup], fold_dir.parent.parent
    if spec.first or spec.stage_one:
        first = spec.first or spec.stage_one
        return fold_box_fraction(folds / first / fold_dir.name, first)
    if spec.reuses:
        return fold_box_fraction(folds / spec.reuses / fold_dir.name, spec.reuses)
    return box_fraction(fold_dir / "run")


def starting_rules_of_fold(fold_dir: Path) -> PostprocessRules:
    """Where tuning starts for this fold's grid, as ``train`` starts it."""
    return starting_rules(fold_box_fraction(fold_dir, fold_dir.parent.name))


def sync_archives(data: Path, setups: list[str], folds: int, work: Path, seed: int) -> None:
    """Archive every done fold into results/ that is not archived yet, and rebuild every archived fold that
    this machine lacks (fold_archive), so that scoring sees the folds of every session."""
    for setup in setups:
        for fold in range(folds):
            fold_dir, path = work / setup / f"fold{fold}", archive_path(RESULTS, setup, fold)
            if (fold_dir / "done.json").exists() and not path.exists():
                archive_fold(fold_dir, path, fold_box_fraction(fold_dir, setup))
            elif path.exists() and not (fold_dir / "done.json").exists():
                restore_fold(path, fold_dir, partial(_linked_cases, data), partial(_carve_held_out, seed=seed))


def _tuning_grid(start: PostprocessRules) -> dict:
    # These cases have no cavity and (nearly all) one tumour: erasing every predicted cavity, or every tumour but the
    # largest, could only score better here, and would erase real cavities and the second lesions of multifocal and
    # post-treatment disease later (keeping the largest took the packaged model's held-out synthetic post-treatment WT
    # Dice from 0.95 to 0.77). Both rules stay where tuning starts.
    return {**GRID, "rc_min_voxels": (start.rc_min_voxels,), "tumour_keep_largest": (start.tumour_keep_largest,)}


SUPPORT = 0.95
"""A tuned rule leaves its start only for a gain found in this share of bootstrap resamples of the tuning cases
(``tune_rules(min_support=...)``): 21 or 28 real cases are enough to resample, and without it one fold's rules
followed two of 21 cases to keep 25-voxel enhancing specks, which gave a held-out case with no enhancement a false
one (cascade64mean fold 2: ET -0.218 against preset64 there)."""


def nested_rules(work: Path, setup: str, fold: int, folds: int) -> PostprocessRules:
    """The rules fold ``fold`` of ``setup`` is scored with: tuned on its other folds' held-out predictions, so that no
    case is scored with rules it helped choose (kept in the fold's nested_rules.json with where tuning started and
    the support it asked for: a done fold never changes, a file tuned another way is tuned again)."""
    kept = work / setup / f"fold{fold}" / "nested_rules.json"
    others = [work / setup / f"fold{k}" for k in range(folds) if k != fold]
    if not all((d / "done.json").exists() for d in others):  # where tuning starts is read from them, kept rules or not
        raise SystemExit(f"{setup} fold {fold}: its rules are tuned on the other folds' predictions, and not all are done in {work}")
    start = starting_rules_of_fold(others[0])
    how = {"start": start.to_dict(), "min_support": SUPPORT}
    document = json.loads(kept.read_text()) if kept.exists() else {}
    if {k: v for k, v in document.items() if k != "rules"} == how:
        return PostprocessRules.from_dict(document["rules"])
    cases = [case for d in others for case in load_validation_cases(d / "pred", d / "held_out")]
    rules = tune_rules(cases, OFFICIAL, grid=_tuning_grid(start), workers=2, start=start, min_support=SUPPORT).rules
    kept.write_text(json.dumps({"rules": rules.to_dict(), **how}, indent=2) + "\n")
    return rules


def summarise_setup(setup: str, work: Path, folds: int) -> dict | None:
    """Scores of one setup's held-out predictions, raw and with nested-tuned rules; None before every fold is done."""
    fold_dirs = [work / setup / f"fold{k}" for k in range(folds)]
    if not all((d / "done.json").exists() for d in fold_dirs):
        return None
    cases = [load_validation_cases(d / "pred", d / "held_out") for d in fold_dirs]
    start = starting_rules_of_fold(fold_dirs[0])
    per_case: dict[str, dict] = {}
    carved: dict[str, dict] = {}
    nested = []
    inputs = [name for name in INCOMPLETE_INPUTS if all((d / f"pred_{name}").is_dir() for d in fold_dirs)]
    with_carved = all((d / "pred_carved").is_dir() for d in fold_dirs)
    for k, fold_dir in enumerate(fold_dirs):
        rules = nested_rules(work, setup, k, folds)
        nested.append(rules.to_dict())
        (raw, raw_found), (tuned, tuned_found) = _case_scores(cases[k], PostprocessRules()), _case_scores(cases[k], rules)
        for case in cases[k]:
            per_case[case.case_id] = {"fold": k, "raw": raw[case.case_id], "nested": tuned[case.case_id],
                                      "cavity_ml": {"raw": raw_found[case.case_id]["cavity_ml"],
                                                    "nested": tuned_found[case.case_id]["cavity_ml"]},
                                      "core_voxels": tuned_found[case.case_id]["core_voxels"]}
        if with_carved:  # the fold's rules too: tuned on pre-operative cases, they must not erase a real cavity
            carved.update({c: {"fold": k, "raw": raw_rc, "nested": tuned_rc} for c, (raw_rc, tuned_rc) in carved_rc(fold_dir, rules).items()})
        for name in inputs:  # the fold's rules, tuned on full inputs: a clinic's incomplete exam gets the same model
            incomplete = load_validation_cases(fold_dir / f"pred_{name}", fold_dir / "held_out")
            for case_id, regions in _case_scores(incomplete, rules)[0].items():
                per_case[case_id].setdefault("inputs", {})[name] = regions
    all_cases = [case for fold_cases in cases for case in fold_cases]
    final = tune_rules(all_cases, OFFICIAL, grid=_tuning_grid(start), workers=2, start=start, min_support=SUPPORT)
    save_rules(final.rules, work / setup / "postprocess.json", {"cases": final.cases, "tuned_on": "every held-out prediction of "
                                                                 f"the {folds}-fold cross-validation", **final.provenance(OFFICIAL)})
    timing = [json.loads((d / "timing.json").read_text()) for d in fold_dirs]

    def pooled(kind: str, metric: int) -> dict[str, dict[str, float]]:
        return {region: interval([c[kind][region][metric] for c in per_case.values()]) for region in REGIONS}

    return {
        "setup": SETUPS[setup].describe(),
        "cases": len(per_case),
        "train_min_per_fold": [round(t["train_s"] / 60, 1) for t in timing],
        "trained_on": trained_on(timing),
        "predict_s_per_case": round(sum(t["predict_s"] for t in timing) / len(per_case), 2),
        "dice": {"raw": pooled("raw", 0), "nested": pooled("nested", 0)},
        "hd95": {"raw": pooled("raw", 1), "nested": pooled("nested", 1)},
        "false_cavities": {"raw": false_cavities(per_case, "raw"), "nested": false_cavities(per_case, "nested")},
        **({"carved_rc_dice": {kind: interval([e[kind] for e in carved.values()]) for kind in ("raw", "nested")},
            "carved_rc_per_case": carved} if carved else {}),
        "core_shares": core_shares(per_case),
        "inputs": {name: {region: interval([c["inputs"][name][region][0] for c in per_case.values()]) for region in REGIONS}
                   for name in inputs},
        "inputs_change_from_full": {name: {region: _paired(per_case, lambda e, g=region, n=name: e["inputs"][n][g][0],
                                                           lambda c, e, g=region: e["nested"][g][0]) for region in REGIONS}
                                    for name in inputs},
        "nested_rules": nested,
        "tuning": {"min_support": SUPPORT},
        "rules_all_cases": final.rules.to_dict(),
        "per_case": per_case,
    }


def tumour_mean(result: dict) -> float:
    """Mean pooled lesion-wise Dice (nested rules) over the tumour regions: how setups are ranked."""
    return float(np.mean([result["dice"]["nested"][r]["mean"] for r in TUMOUR_REGIONS]))


def _cell(stat: dict[str, float], digits: int) -> str:
    return f"{stat['mean']:.{digits}f} [{stat['low']:.{digits}f}, {stat['high']:.{digits}f}]"


def worst_cases(result: dict, count: int) -> list[str]:
    """The ``count`` held-out cases of a setup's summary with the lowest tumour-region mean Dice (nested rules), worst first."""
    return sorted(result["per_case"], key=lambda c: np.mean([result["per_case"][c]["nested"][r][0] for r in TUMOUR_REGIONS]))[:count]


def draw_worst(result: dict, work: Path, setup: str, data: Path, count: int, out_dir: Path = RESULTS) -> list[str]:
    """Ground truth | prediction (nested rules) of the ``count`` cases with the lowest tumour-region mean Dice, drawn
    into ``out_dir``: their file names."""
    names = []
    for case_id in worst_cases(result, count):
        entry = result["per_case"][case_id]
        fold_dir = work / setup / f"fold{entry['fold']}"
        case = load_case(read_case_folder(data / case_id))
        prediction = next(c for c in load_validation_cases(fold_dir / "pred", fold_dir / "held_out") if c.case_id == case_id).prediction
        rules = PostprocessRules.from_dict(result["nested_rules"][entry["fold"]])
        name = f"real_cv_{case_id}.png"
        scores = ", ".join(f"{r} {entry['nested'][r][0]:.2f}" for r in TUMOUR_REGIONS)
        plot_overlay(case.image, rules.apply(prediction), out_dir / name, ground_truth=case.label, title=f"{case_id} ({setup}): {scores}")
        names.append(name)
    return names


def summarise(args: argparse.Namespace) -> None:
    scored = {setup: r for setup in args.setups if (r := summarise_setup(setup, args.work, args.folds)) is not None}
    if not scored:
        sys.exit(f"bench_real: no setup has all {args.folds} folds done in {args.work}")
    path = RESULTS / "real_cv.json"
    earlier = json.loads(path.read_text()) if path.exists() else {"setups": {}}
    # setups summarised before fold archives existed (their runs gone) keep their entries
    results = {**earlier["setups"], **scored}
    chosen = args.chosen or max(results, key=lambda s: tumour_mean(results[s]))
    overlays = (draw_worst(results[chosen], args.work, chosen, args.data, args.worst) if chosen in scored
                else earlier["overlays"] if chosen == earlier.get("chosen") else [])
    n = results[chosen]["cases"]
    header = "| setup | options | train min/fold (2 cores of) | " + " | ".join(TUMOUR_REGIONS) + " | mean |"
    rule = "|---|---|---|" + "---|" * (len(TUMOUR_REGIONS) + 1)

    def rows(metric: str, kind: str, digits: int) -> list[str]:
        return [f"| {s}{' (chosen)' if s == chosen else ''} | `{r['setup']}` | "
                f"{np.mean(r['train_min_per_fold']):.1f} ({r.get('trained_on', 'not recorded')}) | " + " | ".join(_cell(r[metric][kind][g], digits) for g in TUMOUR_REGIONS)
                + f" | {np.mean([r[metric][kind][g]['mean'] for g in TUMOUR_REGIONS]):.{digits}f} |" for s, r in results.items()]

    per_case = results[chosen]["per_case"]
    # what each setup moved: per case against the baseline on the same held-out cases, the interval of the paired differences
    baseline = results[args.baseline]["per_case"]
    changes = {s: {c: {g: e["nested"][g][0] - baseline[c]["nested"][g][0] for g in TUMOUR_REGIONS} for c, e in r["per_case"].items()}
               for s, r in results.items() if s != args.baseline}
    paired = {s: {g: interval([change[g] for change in by_case.values()]) for g in TUMOUR_REGIONS} for s, by_case in changes.items()}
    # what the issue's "better on every fold" reads: per fold, the mean over its cases and the tumour regions
    by_fold = {s: [float(np.mean([change[g] for c, change in by_case.items() if results[s]["per_case"][c]["fold"] == k
                                  for g in TUMOUR_REGIONS])) for k in range(args.folds)] for s, by_case in changes.items()}
    untuned = [s for s, r in results.items() if r.get("tuning") != {"min_support": SUPPORT}]
    lines = [
        f"{args.folds}-fold cross-validation by patient (seed {args.seed}) over the {n} real cases: each case is predicted by "
        "the run that never saw it (`gliomaseg train --preset cpu --val-fraction 0` plus the setup's options on the other "
        "folds, `predict` from the raw folders), scored with the official BraTS 2024 lesion-wise protocol on the native grid. "
        "Post-processing rules for each fold were tuned on the other folds' held-out predictions (nested: no case is scored "
        "with rules it helped choose), from `starting_rules` and asking each move for support in "
        f"{SUPPORT:.0%} of bootstrap resamples of the tuning cases (`SUPPORT`)"
        + (f"; {', '.join(untuned)} keep the rules of their last summary, tuned before that (with no enhancement rule at "
           "the start and without support: a setup summarised again is tuned anew)" if untuned else "") + ". Pooled mean over all cases with a 95 % bootstrap interval over cases "
        f"({BOOTSTRAP:,} resamples). RC is left out of these tables: the cases are pre-operative, so every predicted "
        "resection cavity is false; they are counted below.",
        "",
        "Lesion-wise Dice, nested post-processing:", "", header, rule, *rows("dice", "nested", 3), "",
        f"Paired change from {args.baseline} (nested post-processing; per case, then the mean with a 95 % bootstrap interval "
        "over cases; per fold, the mean change over its cases and the five regions):", "",
        "| setup | " + " | ".join(TUMOUR_REGIONS) + " | per fold |", "|---|" + "---|" * (len(TUMOUR_REGIONS) + 1),
        *(f"| {s} | " + " | ".join(_gain_cell(p[g]) for g in TUMOUR_REGIONS) + " | " + ", ".join(f"{d:+.3f}" for d in by_fold[s])
          + " |" for s, p in paired.items()), "",
        "Lesion-wise Dice, no post-processing:", "", header, rule, *rows("dice", "raw", 3), "",
        "Lesion-wise HD95 (mm), nested post-processing:", "", header, rule, *rows("hd95", "nested", 1), "",
        "False resection cavities (pre-operative cases given a cavity; the largest), and for a setup trained with carved "
        "cases, RC lesion-wise Dice on a cavity carved into each held-out case (anatomy its run never saw):", "",
        "| setup | no post-processing | nested post-processing | carved RC, no post-processing | carved RC, nested |",
        "|---|---|---|---|---|",
        *(f"| {s} | " + " | ".join(f"{f['cases']} of {f['of']} ({f['largest_ml']:.1f} mL)" for f in
                                   (r["false_cavities"]["raw"], r["false_cavities"]["nested"])) + " | "
          + (" | ".join(_cell(r["carved_rc_dice"][kind], 3) for kind in ("raw", "nested")) if "carved_rc_dice" in r else "- | -")
          + " |" for s, r in results.items()), "",
        "Where the ground truth's core went (nested post-processing, voxels pooled over the cases: the share of each "
        "core label's voxels predicted as each label):", "",
        "| setup | " + " | ".join(f"{name} → {label}" for name in CORE_LABELS for label in LABELS.values()) + " |",
        "|---|" + "---|" * (len(CORE_LABELS) * len(LABELS)),
        *(f"| {s} | " + " | ".join(f"{share:.3f}" for name in CORE_LABELS for share in r["core_shares"][name]) + " |"
          for s, r in results.items() if r.get("core_shares")), "",
        f"Per case, {chosen}, nested post-processing (lesion-wise Dice; predicted cavity in mL):", "",
        "| case | fold | " + " | ".join(TUMOUR_REGIONS) + " | cavity |", "|---|---|" + "---|" * (len(TUMOUR_REGIONS) + 1),
        *(f"| {c} | {e['fold']} | " + " | ".join(f"{e['nested'][r][0]:.3f}" for r in TUMOUR_REGIONS) + f" | {e['cavity_ml']['nested']:.1f} |"
          for c, e in sorted(per_case.items())),
        "", f"Worst cases of {chosen}: " + ", ".join(f"`{o}`" for o in overlays) + ".",
    ]
    headline = {region: results[chosen]["dice"]["nested"][region]["mean"] for region in TUMOUR_REGIONS}
    write_results("real_cv", headline, {"settings": {"folds": args.folds, "seed": args.seed, "bootstrap": BOOTSTRAP},
                                        "chosen": chosen, "setups": results, "baseline": args.baseline, "paired_vs_baseline": paired,
                                        "paired_by_fold": by_fold, "overlays": overlays}, lines)


def _fold_screen(fold_dir: Path, fold: int, rules: PostprocessRules,
                 input_rules: PostprocessRules | None = None) -> tuple[dict[str, dict], dict[str, dict]]:
    """One done fold's held-out scores per case, raw and after ``rules`` (the baseline's nested rules of the fold),
    with every incomplete input predicted (raw, and after ``input_rules`` when given: the inputs baseline's nested
    rules of the fold, on the full input too); and RC on its carved cases."""
    per_case: dict[str, dict] = {}
    cases = load_validation_cases(fold_dir / "pred", fold_dir / "held_out")
    (scores, found), (cleaned, cleaned_found) = _case_scores(cases, PostprocessRules()), _case_scores(cases, rules)
    for case_id, regions in scores.items():
        per_case[case_id] = {"fold": fold, "raw": regions, "baseline_rules": cleaned[case_id], "cavity_ml": found[case_id]["cavity_ml"],
                             "cavity_ml_baseline_rules": cleaned_found[case_id]["cavity_ml"]}
    inputs = [name for name in INCOMPLETE_INPUTS if (fold_dir / f"pred_{name}").is_dir()]
    if inputs and input_rules is not None:
        for case_id, regions in _case_scores(cases, input_rules)[0].items():
            per_case[case_id]["inputs_baseline_rules"] = {"all four": regions}
    for name in inputs:
        incomplete = load_validation_cases(fold_dir / f"pred_{name}", fold_dir / "held_out")
        for case_id, regions in _case_scores(incomplete, PostprocessRules())[0].items():
            per_case[case_id].setdefault("inputs", {})[name] = regions
        if input_rules is not None:
            for case_id, regions in _case_scores(incomplete, input_rules)[0].items():
                per_case[case_id]["inputs_baseline_rules"][name] = regions
    carved: dict[str, dict] = {}
    if (fold_dir / "pred_carved").is_dir():
        carved = {case_id: {"fold": fold, "rc": raw_rc, "rc_baseline_rules": cleaned_rc}
                  for case_id, (raw_rc, cleaned_rc) in carved_rc(fold_dir, rules).items()}
    return per_case, carved


def _paired(per_case: dict[str, dict], score: Callable[[dict], float], reference: Callable[[str, dict], float]) -> dict[str, float]:
    # the per-case differences' bootstrap interval is the paired one: each resample keeps a case's two scores together
    return interval([score(entry) - reference(case_id, entry) for case_id, entry in per_case.items()])


def screen_setup(setup: str, work: Path, folds: int, baseline_name: str, baseline: dict,
                 inputs_baseline: tuple[str, dict] | None = None) -> dict | None:
    """A setup's held-out scores on the folds done so far, per case against ``baseline``'s (its entry in
    results/real_cv.json): raw against raw, and with the baseline's nested rules of each fold on both (the same
    post-processing for the two, so a screen of some folds sees the setup as it would be cleaned); with carved
    held-out cases, their RC; with incomplete inputs, each one's scores and its paired change from the full input,
    and, given ``inputs_baseline`` (a setup's name and entry with incomplete inputs, e.g. the model shipped for
    incomplete exams), each input's paired change from that setup's on the same input, both cleaned by its nested
    rules of the fold. None before any fold is done."""
    done = [k for k in range(folds) if (work / setup / f"fold{k}" / "done.json").exists()]
    per_case: dict[str, dict] = {}
    carved: dict[str, dict] = {}
    reference = baseline["per_case"]
    for k in done:
        fold_rules = PostprocessRules.from_dict(baseline["nested_rules"][k])
        input_rules = PostprocessRules.from_dict(inputs_baseline[1]["nested_rules"][k]) if inputs_baseline else None
        fold_cases, fold_carved = _fold_screen(work / setup / f"fold{k}", k, fold_rules, input_rules)
        per_case.update(fold_cases)
        carved.update(fold_carved)
    if not per_case:
        return None
    inputs = {}
    for name in INCOMPLETE_INPUTS:
        scored = {c: e for c, e in per_case.items() if name in e.get("inputs", {})}
        if scored:
            inputs[name] = {"cases": len(scored), "dice": {g: interval([e["inputs"][name][g][0] for e in scored.values()]) for g in REGIONS},
                            "change_from_full": {g: _paired(scored, lambda e, g=g, n=name: e["inputs"][n][g][0],
                                                            lambda c, e, g=g: e["raw"][g][0]) for g in REGIONS}}
    against_inputs = None
    if inputs_baseline and inputs:
        name_b, entry_b = inputs_baseline
        theirs = {c: {"all four": e["nested"], **e["inputs"]} for c, e in entry_b["per_case"].items()}
        against_inputs = {"setup": name_b, "inputs": {
            name: {"ours": {g: interval([e["inputs_baseline_rules"][name][g][0] for e in per_case.values()]) for g in REGIONS},
                   "change": {g: _paired(per_case, lambda e, g=g, n=name: e["inputs_baseline_rules"][n][g][0],
                                         lambda c, e, g=g, n=name: theirs[c][n][g][0]) for g in REGIONS}}
            for name in ("all four", *inputs)}}
    return {"setup": SETUPS[setup].describe(), "baseline": baseline_name, "folds_done": sorted({e["fold"] for e in per_case.values()}),
            "cases": len(per_case),
            "dice_raw": {g: interval([e["raw"][g][0] for e in per_case.values()]) for g in REGIONS},
            "paired_gain_raw": {g: _paired(per_case, lambda e, g=g: e["raw"][g][0], lambda c, e, g=g: reference[c]["raw"][g][0])
                                for g in REGIONS},
            "paired_gain_baseline_rules": {g: _paired(per_case, lambda e, g=g: e["baseline_rules"][g][0],
                                                      lambda c, e, g=g: reference[c]["nested"][g][0]) for g in REGIONS},
            "false_cavities_raw": cavity_count([e["cavity_ml"] for e in per_case.values()]),
            "baseline_false_cavities_raw": sum(reference[c]["cavity_ml"]["raw"] > 0 for c in per_case),
            "false_cavities_baseline_rules": cavity_count([e["cavity_ml_baseline_rules"] for e in per_case.values()]),
            "baseline_false_cavities_nested": sum(reference[c]["cavity_ml"]["nested"] > 0 for c in per_case),
            "carved_rc_dice": interval([e["rc"] for e in carved.values()]) if carved else None,
            "carved_rc_dice_baseline_rules": interval([e["rc_baseline_rules"] for e in carved.values()]) if carved else None,
            "carved_rc_per_case": carved,
            "inputs": inputs, "against_inputs_baseline": against_inputs, "per_case": per_case}


def _gain_cell(stat: dict[str, float]) -> str:
    return f"{stat['mean']:+.3f} [{stat['low']:+.3f}, {stat['high']:+.3f}]"


def _screen_row(name: str, r: dict, kind: str, baseline_cavities: str, carved_rc: str) -> str:
    """One setup's line of a screen table: paired gains, false cavities and carved RC, raw or after the baseline's rules."""
    cavities = r.get(f"false_cavities_{kind}")
    counted = (f"{cavities['cases']} of {cavities['of']}, largest {cavities['largest_ml']:.1f} mL ({r[baseline_cavities]})"
               if cavities else "-")
    rc = _cell(r[carved_rc], 3) if r.get(carved_rc) else "-"
    return (f"| {name} | {r['baseline']} | {','.join(map(str, r['folds_done']))} | {r['cases']} | "
            + " | ".join(_gain_cell(r[f"paired_gain_{kind}"][g]) for g in TUMOUR_REGIONS) + f" | {counted} | {rc} |")


def screen(args: argparse.Namespace) -> None:
    summaries = json.loads((RESULTS / "real_cv.json").read_text())["setups"]
    baseline = summaries[args.baseline]
    inputs_baseline = (args.inputs_baseline, summaries[args.inputs_baseline]) if args.inputs_baseline else None
    path = RESULTS / "real_screen.json"
    # a setup screened before fold archives existed (its runs gone) keeps its entry
    results = json.loads(path.read_text())["setups"] if path.exists() else {}
    # the baseline itself, when run again, is screened against its own archived scores: run-to-run noise
    results.update({setup: r for setup in args.setups
                    if (r := screen_setup(setup, args.work, args.folds, args.baseline, baseline, inputs_baseline)) is not None})
    if not results:
        sys.exit(f"bench_real: no fold of {', '.join(args.setups)} is done in {args.work}")
    lines = ["Screens against a baseline on the same patient-wise folds (seed "
             f"{args.seed}): official 2024 lesion-wise Dice; per region the mean per-case difference from the baseline "
             "(its held-out scores in results/real_cv.json) with a 95 % paired bootstrap interval over cases. A screen "
             "covers only the folds done so far: a candidate ships on all folds. A setup screened against itself is a "
             "second run of it on the same folds: the run-to-run noise.", "",
             "Raw held-out predictions (no post-processing):", "",
             "| setup | against | folds | cases | " + " | ".join(TUMOUR_REGIONS) + " | false cavities (baseline) | RC Dice, held-out carved |",
             "|---|---|---|---|" + "---|" * len(TUMOUR_REGIONS) + "---|---|"]
    lines += [_screen_row(name, r, "raw", "baseline_false_cavities_raw", "carved_rc_dice") for name, r in results.items()]
    cleaned = {name: r for name, r in results.items() if "paired_gain_baseline_rules" in r}
    if cleaned:
        lines += ["", "Both post-processed with the baseline's nested rules of each fold (the same rules for the two; "
                      "cavities and RC of a screen from before they were counted so: -):", "",
                  "| setup | against | folds | cases | " + " | ".join(TUMOUR_REGIONS) + " | false cavities (baseline) | RC Dice, held-out carved |",
                  "|---|---|---|---|" + "---|" * len(TUMOUR_REGIONS) + "---|---|"]
        lines += [_screen_row(name, r, "baseline_rules", "baseline_false_cavities_nested", "carved_rc_dice_baseline_rules")
                  for name, r in cleaned.items()]
    for name, r in results.items():
        if r.get("inputs"):
            lines += ["", f"{name}, the held-out cases with sequences removed (the files deleted, `predict` zero-fills them): "
                      "lesion-wise Dice, and below it the paired change from the same cases' full input.", "",
                      "| input | cases | " + " | ".join(TUMOUR_REGIONS) + " |", "|---|---|" + "---|" * len(TUMOUR_REGIONS),
                      f"| all four | {r['cases']} | " + " | ".join(_cell(r["dice_raw"][g], 3) for g in TUMOUR_REGIONS) + " |"]
            for input_name, stats in r["inputs"].items():
                lines.append(f"| {input_name} | {stats['cases']} | " + " | ".join(
                    f"{stats['dice'][g]['mean']:.3f} ({_gain_cell(stats['change_from_full'][g])})" for g in TUMOUR_REGIONS) + " |")
        if r.get("against_inputs_baseline"):
            other = r["against_inputs_baseline"]
            lines += ["", f"{name} against {other['setup']} on each input, both cleaned by {other['setup']}'s nested rules of "
                      f"each fold: lesion-wise Dice, and the paired change from {other['setup']} on the same cases and input.", "",
                      "| input | " + " | ".join(TUMOUR_REGIONS) + " |", "|---|" + "---|" * len(TUMOUR_REGIONS)]
            lines += [f"| {input_name} | " + " | ".join(f"{stats['ours'][g]['mean']:.3f} ({_gain_cell(stats['change'][g])})"
                                                       for g in TUMOUR_REGIONS) + " |" for input_name, stats in other["inputs"].items()]
    headline = {name: {g: r["paired_gain_raw"][g]["mean"] for g in TUMOUR_REGIONS} for name, r in results.items()}
    write_results("real_screen", headline, {"setups": results}, lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    for name in ("run", "summarise", "screen"):
        step = sub.add_parser(name)
        step.add_argument("--data", type=Path, default=DEFAULT_DATA)
        step.add_argument("--work", type=Path, required=True, help="where the runs and predictions are kept (outside the work tree)")
        step.add_argument("--setups", nargs="+", default=list(SETUPS), choices=list(SETUPS))
        step.add_argument("--folds", type=int, default=4)
        step.add_argument("--seed", type=int, default=0)
        if name == "summarise":
            step.add_argument("--chosen", choices=list(SETUPS), help="the setup to report per case (default: the best tumour-region mean)")
            step.add_argument("--worst", type=int, default=4, help="overlays of this many of the chosen setup's worst cases")
        if name in ("screen", "summarise"):
            step.add_argument("--baseline", default="preset64", help="the setup of results/real_cv.json to pair against")
        if name == "screen":
            step.add_argument("--inputs-baseline", choices=list(SETUPS),
                              help="a setup of results/real_cv.json with incomplete inputs to pair each input against")
        if name == "run":
            step.add_argument("--only", type=int, nargs="+", help="run only these folds (default: every one)")
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"bench_real: skipped, no real cases at {args.data} (give the folder with --data)", file=sys.stderr)
        return
    splits = folds_of(args.data, args.folds, args.seed)
    if args.step == "run":
        for setup in args.setups:
            for fold in range(len(splits)):
                if args.only is None or fold in args.only:
                    run_fold(args.data, setup, fold, splits, args.work, args.seed)
    else:
        sync_archives(args.data, args.setups, args.folds, args.work, args.seed)
        (screen if args.step == "screen" else summarise)(args)


if __name__ == "__main__":
    main()
