"""mkdocs hook: the pages written from the code and the results, never by hand.

- ``generated/cli.md``: the command-line reference, from the typer app (``typer ... utils docs``);
- ``generated/benchmarks.md``: ``benchmarks/results/*.md``, each under the heading and intro of BENCHMARKS;
- ``generated/model-card*.md``: the packaged models' MODEL_CARD.md (the default, its first stage alone, the one for
  incomplete exams), their pictures beside them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "docs" / "generated"
RESULTS = ROOT / "benchmarks" / "results"

BENCHMARKS = {
    "real_cv": ("Real tumours: which setup, cross-validated",
                "`benchmarks/bench_real.py run|summarise`: every real case held out once (4 folds by patient), each setup "
                "trained with `gliomaseg train --preset cpu` and its own options as a user runs it (or predicting with another "
                "setup's runs another way: a fusion, the axis flips, an ensemble), scored with the official 2024 lesion-wise "
                "protocol, raw and with post-processing rules tuned on the other folds. Each row names its training minutes a "
                "fold and the CPU they were measured on; the chosen setup is the packaged default model's."),
    "real_screen": ("Real tumours: candidates screened against a baseline", "`benchmarks/bench_real.py screen`: the folds "
                    "of a candidate done so far, per case against a cross-validated setup on the same folds (raw predictions, "
                    "and both cleaned by the baseline's rules of each fold), with paired bootstrap intervals; a screen decides "
                    "what to drop early, not what ships."),
    "core_weight": ("Real tumours: the core's probability weighted before the arg-max", "`benchmarks/bench_core_weight.py`: "
                    "the chosen setup's held-out probabilities with the NETC probability scaled before the arg-max, each fold "
                    "cleaned by its nested rules; the weight each fold is scored with is chosen on the other folds' cases."),
    "predict": ("Prediction speed", "`benchmarks/bench_predict.py`: one 240x240x155 case, load to label map on disk, 2 CPU cores."),
    "predict_brats-gli-incomplete-carved28": ("Prediction speed: the model for incomplete exams", "`benchmarks/bench_predict.py "
                                              "--model gliomaseg/models/brats-gli-incomplete-carved28 --results "
                                              "predict_brats-gli-incomplete-carved28`: the same cases, all four sequences given."),
    "journey": ("One raw exam, start to finish", "`benchmarks/bench_journey.py`: prepare, predict with the packaged model, score."),
    "backends": ("Inference engines", "`benchmarks/bench_backends.py`: the packaged model's forward pass in torch and ONNX Runtime."),
    "prepare": ("Raw exams to BraTS-ready cases", "`benchmarks/bench_prepare.py`: each exam in its own process, 2 CPU cores."),
    "evaluate": ("Scoring speed and parity", "`benchmarks/bench_evaluate.py`: both protocols against their reference code, same pairs."),
    "measure": ("Measurement speed", "`benchmarks/bench_measure.py`: `gliomaseg measure` per exam on the real expert label maps, "
                "at 1 mm and resampled to 0.9x0.9x4 mm, against reading the label map alone in the same run."),
    "preprocess": ("Preprocessing speed", "`benchmarks/bench_preprocess.py`."),
    "train": ("Training step speed", "`benchmarks/bench_train.py`: seconds per step, loader throughput."),
    "train_step_avx2": ("Where a cpu-preset training step goes: AVX2 cores", "`benchmarks/bench_train_step.py`: `--preset cpu` steps "
                        "split into loader, forward, loss, backward and optimiser, the ops by self time, and oneDNN's kernel for each "
                        "convolution pass."),
    "train_step_avx512": ("Where a cpu-preset training step goes: AVX-512/bf16 cores", "The same on the other kind of CPU these "
                          "machines come with."),
    "train_step_avx512-held-avx2": ("Where a cpu-preset training step goes: AVX-512 cores held to AVX2", "`bench_train_step.py "
                                    "--hold-avx2`: the same on the AVX-512 EPYC with oneDNN, ATen and MKL held to AVX2 (so fp32): "
                                    "the kernels an AVX2-only CPU runs, not its speed; its ratios are what it measures."),
    "learning": ("Learning on synthetic data", "`benchmarks/bench_learning.py`: held-out lesion-wise Dice against steps, four networks, two targets."),
    "learning_augment": ("Augmentation on synthetic data", "`benchmarks/bench_learning.py --augment basic multisite`."),
}


def _cli_reference() -> str:
    text = subprocess.run([sys.executable, "-m", "typer", "gliomaseg.cli", "utils", "docs", "--name", "gliomaseg"],
                          check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return "<!-- generated from the typer app by docs/hooks/generate_pages.py: do not edit -->\n\n" + text.replace("# `gliomaseg`", "# Command-line reference\n\n## `gliomaseg`", 1)


def _benchmarks() -> str:
    parts = ["# Benchmarks\n", "Run on demand (`make bench`); each writes `benchmarks/results/<name>.json` and `.md`, and each "
             "table names the machine it was measured on. Compare ratios within a table, not across machines.\n"]
    for name, (title, intro) in BENCHMARKS.items():
        table = RESULTS / f"{name}.md"
        if table.exists():
            parts.append(f"## {title}\n\n{intro}\n\n{table.read_text()}\n")
    return "\n".join(parts)


def _model_card(name: str, pictures: str) -> str:
    """The packaged model's card, its failure pictures copied to generated/<pictures>/ (two cards' pictures can share a name)."""
    from gliomaseg.model.packaged import packaged_models

    model = packaged_models().get(name)
    if model is None:
        return f"# {name}\n\nThis installation does not ship {name}.\n"
    failures = model.run.path / "failures"
    if failures.is_dir():
        shutil.copytree(failures, GENERATED / pictures, dirs_exist_ok=True)
    return model.run.model_card.read_text().replace("](failures/", f"]({pictures}/")


def on_pre_build(config, **kwargs) -> None:
    GENERATED.mkdir(parents=True, exist_ok=True)
    (GENERATED / "results").mkdir(exist_ok=True)
    for figure in RESULTS.glob("*.png"):
        shutil.copyfile(figure, GENERATED / "results" / figure.name)
    (GENERATED / "cli.md").write_text(_cli_reference())
    (GENERATED / "benchmarks.md").write_text(_benchmarks())
    from gliomaseg.model.packaged import DEFAULT_MODEL, FIRST_STAGE_MODEL, INCOMPLETE_MODEL

    (GENERATED / "model-card.md").write_text(_model_card(DEFAULT_MODEL, "failures"))
    (GENERATED / "model-card-first-stage.md").write_text(_model_card(FIRST_STAGE_MODEL, "failures-first-stage"))
    (GENERATED / "model-card-incomplete.md").write_text(_model_card(INCOMPLETE_MODEL, "failures-incomplete"))
