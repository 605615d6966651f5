"""The ``gliomaseg`` command: a thin layer that parses arguments and calls the API.

One convention everywhere: inputs are positional, the output is ``-o/--out``, a trained model is
``-m/--model``; batch commands report each bad case and go on (``--fail-fast`` stops). Spellings of
the previous release (a positional output, ``evaluate --pred/--gt``...) still work, with a one-line
deprecation warning, until the next one.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from gliomaseg import __version__
from gliomaseg.config import AUGMENTATIONS, FUSIONS, NETWORK_NAMES, OPTIMIZERS, PRESETS, PROTOCOL_NAMES, STAGE_TWO_PATCH, TARGET_NAMES
from gliomaseg.errors import InputError, missing_extra
from gliomaseg.labels import LABEL_SCHEMES, MODALITIES

WORKFLOW = """Post-treatment glioma segmentation in brain MRI (BraTS 2024 GLI).

Usual workflows (each command takes --help):

  own scans: prepare EXAMS -o READY -> predict READY -o PREDS -> view
  training:  check DATA -> train DATA -o RUN -> predict NEW -o PREDS -m RUN
  scoring:   evaluate PREDS DATA -o scores.csv
  follow-up: measure PREDS -o measurements.csv (volumes, bidimensional products over time)

predict uses the packaged model unless -m/--model names another."""

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help=WORKFLOW,
                  context_settings={"max_content_width": 100})
log = logging.getLogger("gliomaseg")
_state = {"quiet": False}

# Choices come from the config's declarations (no torch import for --help); Literal makes --help show them.
Scheme = Literal[tuple(LABEL_SCHEMES)]  # type: ignore[valid-type]
Protocol = Literal[PROTOCOL_NAMES]  # type: ignore[valid-type]
Modality = Literal[MODALITIES]  # type: ignore[valid-type]

Workers = Annotated[int, typer.Option("--workers", "-j", help="Parallel processes.")]
FailFast = Annotated[bool, typer.Option("--fail-fast", help="Stop at the first bad case instead of reporting it and going on.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Redo cases whose outputs exist (default: skip them).")]
Device = Annotated[Optional[str], typer.Option(help="cpu, cuda or cuda:N (default: a GPU when there is one).")]
PreOperative = Annotated[bool, typer.Option("--pre-operative", help="The exams are from before surgery: no voxel is "
                                            "labelled resection cavity (RC); each takes its likeliest other label.")]
SCHEMES_HELP = "brats2024 (4 = resection cavity) or brats2021 (BraTS 2017-2021: 4 = enhancing tumour, read as 3)"
LabelScheme = Annotated[Scheme, typer.Option(help=f"How the label files are written: {SCHEMES_HELP}.")]
ScoringProtocol = Annotated[Protocol, typer.Option(help="brats2024 (the 2024 lesion-wise code, also used in 2025) or brats2026 "
                                                        "(brats-evaluation / panoptica).")]


def _deprecated(old: str, new: str) -> None:
    log.warning("%s is deprecated: use %s (the old spelling stops working in the next release)", old, new)


def _one_of(new: Path | None, old: Path | None, old_spelling: str, new_spelling: str, what: str) -> Path:
    """The value given in the new spelling or, with a deprecation warning, the old one; one is required."""
    if old is not None:
        if new is not None and new != old:
            raise typer.BadParameter(f"{what} given twice ({old_spelling} and {new_spelling}); give it once, as {new_spelling}")
        _deprecated(old_spelling, new_spelling)
        return old
    if new is None:
        raise typer.BadParameter(f"missing {what}: {new_spelling}")
    return new


def _output(out: Path | None, legacy_positional: Path | None, command: str) -> Path:
    return _one_of(out, legacy_positional, f"`{command} ... OUT` (a positional output)", "-o/--out", "the output")


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def handles_input_errors(command):
    """Turn InputError, a missing optional extra and unwritable outputs into one line and exit status 1 (no traceback)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except InputError as err:
            _fail(str(err))
        except ModuleNotFoundError as err:
            if missing_extra(err) is None:
                raise
            _fail(missing_extra(err))
        except OSError as err:  # unwritable output, full disk, a file where a folder should be
            _fail(f"{err.filename or 'output'}: {err.strerror or err}")
        except KeyboardInterrupt:
            _fail("interrupted", 130)

    return wrapper


def _finish(report, what: str) -> None:
    typer.echo(report.summary(what), err=True)
    if not report.ok:
        raise typer.Exit(1)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"gliomaseg {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors; no progress bars.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True)] = False,
) -> None:
    level = logging.ERROR if quiet else logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(message)s", stream=sys.stderr, force=True)
    _state["quiet"] = quiet


@app.command(name="models")
def models_command() -> None:
    """List the models shipped with gliomaseg: name, what it is, its cross-validated scores, its card."""
    from gliomaseg.model.packaged import DEFAULT_MODEL, FIRST_STAGE_MODEL, INCOMPLETE_FIRST_STAGE_MODEL, INCOMPLETE_MODEL, packaged_models

    models = packaged_models()
    if not models:
        _fail("no packaged model in this installation")
    roles = {DEFAULT_MODEL: " (default)", FIRST_STAGE_MODEL: " (the default's first stage alone)",
             INCOMPLETE_MODEL: " (default for exams missing a sequence)",
             INCOMPLETE_FIRST_STAGE_MODEL: " (the first stage alone of the model for exams missing a sequence)"}
    for name, model in models.items():
        cv = model.info.get("cross_validation", {})
        scores = ", ".join(f"{region} {stat['mean']:.3f}" for region, stat in cv.get("dice", {}).items())
        stages = " (two-stage: a 1 mm second stage around the tumour the first finds)" if model.run.load_config().train.stage_one else ""
        typer.echo(f"{name}{roles.get(name, '')}: {model.summary}{stages}")
        if scores:
            typer.echo(f"    {cv.get('label', 'cross-validation')}, lesion-wise Dice: {scores}")
        typer.echo(f"    card: {model.run.model_card}")


@app.command(hidden=True)
def version() -> None:
    """Print the version (also: gliomaseg --version)."""
    typer.echo(__version__)


@app.command()
@handles_input_errors
def check(
    data: Annotated[Path, typer.Argument(help="A case folder or a folder of case folders.")],
    workers: Workers = 1,
    label_scheme: LabelScheme = "brats2024",
) -> None:
    """Validate case folders and print dataset statistics."""
    from gliomaseg.preprocessing.dataset_stats import check_dataset, format_report

    report = check_dataset(data, workers=workers, quiet=_state["quiet"], label_scheme=label_scheme)
    typer.echo(format_report(report))
    _finish(report, "check")


@app.command()
@handles_input_errors
def synth(
    legacy_out: Annotated[Optional[Path], typer.Argument(hidden=True, show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder to write the cases into.")] = None,
    cases: Annotated[int, typer.Option(min=1, help="Number of cases (patients with two timepoints count twice).")] = 4,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed writes the same cases.")] = 0,
    shape: Annotated[tuple[int, int, int], typer.Option(help="Grid, e.g. 240 240 155 for SRI-24.")] = (182, 218, 182),
    from_cases: Annotated[Optional[Path], typer.Option("--from", help="Labelled pre-operative cases: carve a resection cavity "
                                                                      "where each one's tumour is, on its real anatomy "
                                                                      "(--cases and --shape do not apply).")] = None,
    per_case: Annotated[int, typer.Option(min=1, help="With --from: carved cases per host case.")] = 1,
    workers: Workers = 1,
) -> None:
    """Write synthetic post-treatment cases in BraTS layout (with -seg): whole synthetic heads, or with --from
    cavities carved into real cases."""
    target = _output(out, legacy_out, "synth")
    if from_cases is not None:
        from gliomaseg.data.carved_cavities import write_carved_cases

        folders = write_carved_cases(from_cases, target, per_case=per_case, seed=seed, workers=workers, quiet=_state["quiet"])
        typer.echo(f"wrote {len(folders)} carved cases to {target}", err=True)
        return
    from gliomaseg.data.synthetic import write_synthetic_dataset

    folders = write_synthetic_dataset(target, cases, seed=seed, shape=shape, workers=workers, quiet=_state["quiet"])
    typer.echo(f"wrote {len(folders)} cases to {target}", err=True)


@app.command()
@handles_input_errors
def preprocess(
    data: Annotated[Path, typer.Argument(help="A case folder or a folder of case folders.")],
    legacy_out: Annotated[Optional[Path], typer.Argument(hidden=True, show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Cache folder to write.")] = None,
    size: Annotated[int, typer.Option(help="Cubic network grid side.")] = 160,
    label_scheme: LabelScheme = "brats2024",
    workers: Workers = 1,
    overwrite: Overwrite = False,
    fail_fast: FailFast = False,
) -> None:
    """Crop, normalise and resize every case into a fast memory-mapped cache."""
    from gliomaseg.config import PreprocessConfig
    from gliomaseg.preprocessing.cache import preprocess_dataset

    config = PreprocessConfig(size=(size,) * 3, label_scheme=label_scheme)
    report = preprocess_dataset(data, _output(out, legacy_out, "preprocess"), config, workers, overwrite, fail_fast, _state["quiet"])
    _finish(report, "preprocess")


@app.command(name="prepare")
@handles_input_errors
def prepare_command(
    input_path: Annotated[Path, typer.Argument(help="One exam folder (NIfTI files or DICOM series folders, recognised by name) "
                                                    "or a folder of exam folders.")],
    legacy_out: Annotated[Optional[Path], typer.Argument(hidden=True, show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for the prepared cases.")] = None,
    t1n: Annotated[Optional[Path], typer.Option(help="The native T1 file or DICOM folder (one exam; overrides name recognition).")] = None,
    t1c: Annotated[Optional[Path], typer.Option(help="The post-contrast T1.")] = None,
    t2w: Annotated[Optional[Path], typer.Option(help="The T2.")] = None,
    t2f: Annotated[Optional[Path], typer.Option(help="The FLAIR.")] = None,
    atlas: Annotated[str, typer.Option(help="mni152 (the BraTS 2024 grid, 182x218x182 at 1 mm) or a skull-stripped T1 template file.")] = "mni152",
    accurate: Annotated[bool, typer.Option("--accurate", help="HD-BET's five folds with mirroring (about 40x slower on a CPU).")] = False,
    n4: Annotated[bool, typer.Option("--n4", help="N4 bias-field correction before registration.")] = False,
    device: Annotated[Optional[str], typer.Option(help="Where HD-BET runs: cpu, cuda or cuda:N (default: a GPU when there is one).")] = None,
    overwrite: Overwrite = False,
    fail_fast: FailFast = False,
) -> None:
    """Raw exams (skull on, any orientation and voxel size) -> co-registered, skull-stripped cases on the atlas grid."""
    from gliomaseg.preparation.prepare import PrepareOptions, prepare

    given = {"t1n": t1n, "t1c": t1c, "t2w": t2w, "t2f": t2f}
    report = prepare(input_path, _output(out, legacy_out, "prepare"), PrepareOptions(atlas, accurate, n4, device), given=given,
                     overwrite=overwrite, fail_fast=fail_fast, quiet=_state["quiet"])
    _finish(report, "prepare")


@app.command()
@handles_input_errors
def restore(
    labels: Annotated[Path, typer.Argument(help="A label map on a prepared case's grid (e.g. a prediction).")],
    prepared_case: Annotated[Path, typer.Argument(help="The prepared case folder (holds prepare.json).")],
    legacy_out: Annotated[Optional[Path], typer.Argument(hidden=True, show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Label map to write on the original t1c's grid.")] = None,
) -> None:
    """Put a segmentation of a prepared case back on the patient's original t1c grid and affine."""
    from gliomaseg.preparation.restore import restore as restore_labels

    typer.echo(f"wrote {restore_labels(labels, prepared_case, _output(out, legacy_out, 'restore'))}", err=True)


DATA, MODEL, OPTIMISATION, SCHEDULE, VALIDATION, DEVICES = ("Data", "Model", "Optimisation", "Schedule",
                                                           "Validation and post-processing", "Devices and processes")


@app.command(name="train")
@handles_input_errors
def train_command(
    data: Annotated[Path, typer.Argument(help="Case folders or a preprocessed cache.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder (checkpoints, config, metrics, curves).", rich_help_panel=DATA)],
    preset: Annotated[Literal[tuple(PRESETS)], typer.Option(  # type: ignore[valid-type]
        help="Starting settings: recipe, or cpu (2 cores: 64^3, 1,280 steps). Explicit options win.",
        rich_help_panel=DATA)] = "recipe",
    size: Annotated[Optional[int], typer.Option(help="Cubic network grid side (default: the preset's, or a cache's own).",
                                                rich_help_panel=DATA)] = None,
    label_scheme: Annotated[Optional[Scheme], typer.Option(help="How labels are written; brats2021: 4 = ET (default: brats2024, or a cache's own).",
                                                           rich_help_panel=DATA)] = None,
    extra_channel: Annotated[Optional[list[str]], typer.Option(help="Extra input: t1c-t1n (the subtraction).", rich_help_panel=DATA)] = None,
    native: Annotated[bool, typer.Option("--native", help="Keep each brain box on its own grid (1 mm) instead of resizing it; "
                                         "needs --patch-size.", rich_help_panel=DATA)] = False,
    augment: Annotated[Optional[Literal[AUGMENTATIONS]], typer.Option(  # type: ignore[valid-type]
        help="multisite: each sequence on its own, thick-slice imitation (default: basic; cpu preset: multisite).",
        rich_help_panel=DATA)] = None,
    no_augment: Annotated[bool, typer.Option("--no-augment", help="Same as --augment none.", rich_help_panel=DATA)] = False,
    modality_dropout: Annotated[Optional[float], typer.Option(min=0.0, max=0.9, help="Chance each sequence is blanked, to predict "
                                                              "without it (default: 0).", rich_help_panel=DATA)] = None,
    transplant: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="Chance a sample gets another training case's "
                                                        "tumour pasted into its brain (default: 0).", rich_help_panel=DATA)] = None,
    model: Annotated[Optional[Literal[NETWORK_NAMES]], typer.Option(  # type: ignore[valid-type]
        "--model", "-m", help="Network (default: vnet3d, the recipe's).", rich_help_panel=MODEL)] = None,
    targets: Annotated[Optional[Literal[TARGET_NAMES]], typer.Option(  # type: ignore[valid-type]
        help="labels: softmax over 0-4; regions: sigmoid WT, TC, ET, RC (default: labels).", rich_help_panel=MODEL)] = None,
    region_dice: Annotated[Optional[float], typer.Option(min=0.0, help="With label targets: weight of an added Dice over TC and "
                                                         "WT, the composite regions the challenge scores (default: 0).",
                                                         rich_help_panel=MODEL)] = None,
    dropout: Annotated[Optional[float], typer.Option(help="Every dropout layer's probability (default: 0).", rich_help_panel=MODEL)] = None,
    patch_size: Annotated[Optional[int], typer.Option(min=16, help="Train on random cubes of this side, predict by "
                                                      "sliding window (default: the whole grid).", rich_help_panel=MODEL)] = None,
    tumour_cubes: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="With --patch-size: the share of cubes centred "
                                                          "on tumour, the rest anywhere (default: 0.5).", rich_help_panel=MODEL)] = None,
    stage_one: Annotated[Optional[str], typer.Option(help="Train the second stage of a two-stage model over this run (packaged "
                                                     "model, run folder or checkpoint): it segments the box around the tumour "
                                                     "that one finds, on the native grid (implies --native; --patch-size 64 "
                                                     "unless given).", rich_help_panel=MODEL)] = None,
    fusion: Annotated[Optional[Literal[FUSIONS]], typer.Option(  # type: ignore[valid-type]
        help="With --stage-one: near the first stage's tumour, the second stage's probabilities replace the first's, or "
             "the two are averaged (mean), or averaged with the second stage's resection cavity standing in its window "
             "wherever the first saw no tumour (cavity) (default: replace).", rich_help_panel=MODEL)] = None,
    cascade: Annotated[bool, typer.Option("--cascade", help="With --stage-one: the second stage also reads the first "
                                                            "stage's probabilities (nnU-Net's cascade).", rich_help_panel=MODEL)] = False,
    init_from: Annotated[Optional[str], typer.Option(help="Fine-tune from a packaged model (`gliomaseg models`), run folder or "
                                                     "checkpoint, with a fresh schedule.", rich_help_panel=MODEL)] = None,
    optimizer: Annotated[Optional[Literal[OPTIMIZERS]], typer.Option(  # type: ignore[valid-type]
        help="adamw (the recipe's) or sgd (Nesterov 0.99) (default: adamw).", rich_help_panel=OPTIMISATION)] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate, cosine-annealed to 0 (default: 1e-3).",
                                                rich_help_panel=OPTIMISATION)] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Per process (default: 4; cpu preset: 2).", rich_help_panel=OPTIMISATION)] = None,
    no_amp: Annotated[bool, typer.Option("--no-amp", help="Full precision on CUDA.", rich_help_panel=OPTIMISATION)] = False,
    cpu_bf16: Annotated[Optional[bool], typer.Option("--cpu-bf16/--no-cpu-bf16", help="bf16 training on CPUs with native bf16: "
                                                     "~2x faster, not bit-reproducible (default: off; cpu preset: on).",
                                                     rich_help_panel=OPTIMISATION)] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Default 300 (cpu preset: 40).", rich_help_panel=SCHEDULE)] = None,
    steps_per_epoch: Annotated[Optional[int], typer.Option(min=1, help="Batches per epoch, whatever the number of cases "
                                                           "(default: each case --repeats times; cpu preset: 32).",
                                                           rich_help_panel=SCHEDULE)] = None,
    repeats: Annotated[Optional[int], typer.Option(help="Augmented copies of each case per epoch (default: 5).", rich_help_panel=SCHEDULE)] = None,
    seed: Annotated[int, typer.Option(help="Seeds the split, shuffling, augmentation and initialisation.", rich_help_panel=SCHEDULE)] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.", rich_help_panel=SCHEDULE)] = False,
    val_fraction: Annotated[float, typer.Option(help="Share of patients kept for validation (0: train on all).",
                                                rich_help_panel=VALIDATION)] = 0.2,
    folds: Annotated[int, typer.Option(help="k-fold cross-validation by patient (0: one split by --val-fraction).",
                                       rich_help_panel=VALIDATION)] = 0,
    fold: Annotated[int, typer.Option(help="Which fold to train, 0..folds-1.", rich_help_panel=VALIDATION)] = 0,
    val_every: Annotated[Optional[int], typer.Option(help="Epochs between validations (default: 10).", rich_help_panel=VALIDATION)] = None,
    protocol: Annotated[Optional[Protocol], typer.Option(help="What validation and tuning score: brats2024 (lesion-wise Dice) or "
                                                              "brats2026 (pq_dsc) (default: brats2024).", rich_help_panel=VALIDATION)] = None,
    tune_postprocess: Annotated[bool, typer.Option("--tune-postprocess/--no-tune-postprocess", help="After the last epoch, tune "
                                                   "post-processing rules on the validation cases.", rich_help_panel=VALIDATION)] = True,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda or cuda:N (default: a GPU when there is one).", rich_help_panel=DEVICES)] = None,
    deterministic: Annotated[bool, typer.Option("--deterministic", help="Deterministic kernels (slower on GPUs).", rich_help_panel=DEVICES)] = False,
    sync_bn: Annotated[bool, typer.Option("--sync-bn/--no-sync-bn", help="Under torchrun on GPUs: BatchNorm statistics over all processes.",
                                          rich_help_panel=DEVICES)] = True,
    compile_model: Annotated[bool, typer.Option("--compile", help="torch.compile the network (GPUs, long runs).", rich_help_panel=DEVICES)] = False,
    workers: Annotated[int, typer.Option("--workers", "-j", help="Loader processes.", rich_help_panel=DEVICES)] = 2,
) -> None:
    """Train a network with the baseline recipe (or a preset), on raw case folders or a cache."""
    from gliomaseg.config import ExperimentConfig, train_config_for
    from gliomaseg.evaluation.protocol import protocol_named
    from gliomaseg.training.run_tuning import tune_run_postprocessing
    from gliomaseg.training.trainer import preprocess_config_for, train

    if stage_one and tune_postprocess:
        log.info("a two-stage run's rules are tuned on two-stage predictions (`gliomaseg postprocess tune`), not at the end of training")
    try:
        config = ExperimentConfig(
            preprocess=preprocess_config_for(data, size, label_scheme, preset, extra_channel, native or bool(stage_one)),
            train=train_config_for(
                preset, model=model, targets=targets, region_dice=region_dice, dropout=dropout, epochs=epochs, batch_size=batch_size, lr=lr,
                optimizer=optimizer, repeats=repeats, steps_per_epoch=steps_per_epoch,
                patch_size=patch_size if patch_size or not stage_one else STAGE_TWO_PATCH, tumour_cubes=tumour_cubes,
                stage_one=stage_one, fusion=fusion,
                cascade=cascade or None,
                augment="none" if no_augment else augment, modality_dropout=modality_dropout, transplant=transplant,
                val_fraction=val_fraction,
                folds=folds, fold=fold, val_every=val_every, seed=seed, deterministic=deterministic,
                amp=False if no_amp else None, cpu_bf16=cpu_bf16, sync_batchnorm=sync_bn, compile=compile_model, num_workers=workers,
                tune_postprocess=tune_postprocess and not stage_one, protocol=protocol, init_from=init_from,
            ),
            preset=preset,
        )
        result = train(data, out, config, device=device, resume=resume, workers=workers, quiet=_state["quiet"])
    except ValueError as err:
        _fail(str(err))
    if result.completed and result.config.train.tune_postprocess and os.environ.get("RANK", "0") == "0":
        tune_run_postprocessing(out, data, workers, device)
    if result.last_validation:
        scored = f"best validation mean {protocol_named(result.config.train.protocol).metric} {result.best_score:.3f}"
    else:
        scored = "no validation cases: the last epoch is the model"
    typer.echo(f"trained {result.epochs_done} epochs; {scored}; run in {out}", err=True)


def _parse_shard(spec: str) -> tuple[int, int]:
    try:
        index, count = (int(x) for x in spec.split("/"))
    except ValueError:
        raise typer.BadParameter("use i/n, e.g. 0/4") from None
    return index, count


@app.command(name="predict")
@handles_input_errors
def predict_command(
    input_path: Annotated[Path, typer.Argument(help="One case folder or a folder of cases.")],
    legacy_out: Annotated[Optional[Path], typer.Argument(hidden=True, show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for <case>.nii.gz (on each input's grid).")] = None,
    model: Annotated[Optional[list[str]], typer.Option("--model", "-m", help="Packaged model name (`gliomaseg models`), run folder or "
                                                       "checkpoint; repeat to average several (an ensemble) (default: the packaged model).")] = None,
    device: Device = None,
    tta: Annotated[bool, typer.Option("--tta", help="Average over the 8 axis flips.")] = False,
    overwrite: Overwrite = False,
    fail_fast: FailFast = False,
    shard: Annotated[Optional[str], typer.Option(help="Only the i-th of n shares of the cases, as i/n (array jobs) "
                                                      "(default: under torchrun, one share per rank).")] = None,
    no_postprocess: Annotated[bool, typer.Option("--no-postprocess", help="Skip the model's post-processing rules.")] = False,
    rules: Annotated[Optional[Path], typer.Option(help="Post-processing rules file to apply instead of the model's own.")] = None,
    save_probabilities: Annotated[bool, typer.Option("--save-probabilities", help="Also write <case>.npz (native-grid probabilities) "
                                                                                  "for `gliomaseg ensemble`.")] = False,
    native: Annotated[bool, typer.Option("--native", help="Cases made by `gliomaseg prepare`: also <case>-native.nii.gz on the "
                                                          "original t1c's grid and affine, and <case>.seg.dcm (DICOM SEG on the "
                                                          "original t1c series) for exams that came as DICOM.")] = False,
    no_dicom_seg: Annotated[bool, typer.Option("--no-dicom-seg", help="With --native: no DICOM SEG.")] = False,
    pre_operative: PreOperative = False,
) -> None:
    """Segment cases; writes <case>.nii.gz on each input's own grid, post-processed by the model's tuned rules."""
    from gliomaseg.inference.predictor import predict

    if no_postprocess and rules:
        raise typer.BadParameter("give --rules or --no-postprocess, not both")
    target = _output(out, legacy_out, "predict")
    if shard is None:
        shard = f"{os.environ.get('RANK', '0')}/{os.environ.get('WORLD_SIZE', '1')}"
    if not model:
        from gliomaseg.model.packaged import DEFAULT_MODEL, packaged_models

        shipped = packaged_models().get(DEFAULT_MODEL)
        log.info("using the packaged model %s%s (no -m/--model given; `gliomaseg models` lists them)", DEFAULT_MODEL,
                 f": {shipped.summary}" if shipped else "")
    report = predict(input_path, target, model or None, device=device, flip_tta=tta, overwrite=overwrite, fail_fast=fail_fast,
                     shard_spec=_parse_shard(shard), quiet=_state["quiet"], postprocess=rules or not no_postprocess,
                     save_probabilities=save_probabilities, native=native, dicom_seg=not no_dicom_seg, pre_operative=pre_operative)
    _finish(report, "predict")


@app.command(name="ensemble")
@handles_input_errors
def ensemble_command(
    folders: Annotated[list[Path], typer.Argument(help="Folders written by `predict --save-probabilities`, one per run.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the ensemble's <case>.nii.gz.")],
    rules: Annotated[Optional[Path], typer.Option(help="Post-processing rules file to apply (default: none).")] = None,
    overwrite: Overwrite = False,
    fail_fast: FailFast = False,
    pre_operative: PreOperative = False,
) -> None:
    """Average saved probabilities of several runs per case and write the label maps."""
    from gliomaseg.inference.ensemble import ensemble_folders
    from gliomaseg.postprocessing.rules import PostprocessRules, load_rules

    report = ensemble_folders(folders, out, rules=load_rules(rules) if rules else PostprocessRules(), overwrite=overwrite,
                              fail_fast=fail_fast, quiet=_state["quiet"], pre_operative=pre_operative)
    _finish(report, "ensemble")


def _protocol(name: str, corrected: bool = False):
    """The protocol object for ``--protocol`` (and ``--corrected``, which only the 2024 code has)."""
    from gliomaseg.evaluation.protocol import protocol_named

    try:
        return protocol_named(name, corrected)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None


LegacyPred = Annotated[Optional[Path], typer.Option("--pred", hidden=True, show_default=False)]
LegacyGt = Annotated[Optional[Path], typer.Option("--gt", hidden=True, show_default=False)]


@app.command(name="evaluate")
@handles_input_errors
def evaluate_command(
    pred: Annotated[Optional[Path], typer.Argument(help="Prediction file or folder.", show_default=False)] = None,
    gt: Annotated[Optional[Path], typer.Argument(help="Ground-truth file or folder.", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Per-case, per-region CSV (the protocol's own column names).")] = None,
    lesions: Annotated[Optional[Path], typer.Option(help="Per-lesion CSV (2026: brats-evaluation's reference-lesion list).")] = None,
    summary: Annotated[Optional[Path], typer.Option(help="Summary statistics CSV.")] = None,
    missing: Annotated[Literal["error", "empty"], typer.Option(help="A ground truth without prediction: error (reported, the rest "
                                                                    "scored) or empty (scored as an empty prediction).")] = "error",
    protocol: ScoringProtocol = "brats2024",
    corrected: Annotated[bool, typer.Option("--corrected", help="brats2024 only: fix the official code's inconsistencies "
                                                                "(not challenge numbers).")] = False,
    label_scheme: Annotated[Scheme, typer.Option(help=f"How the ground-truth files are written: {SCHEMES_HELP}.")] = "brats2024",
    pred_label_scheme: Annotated[Scheme, typer.Option(help="Label scheme of the predictions (gliomaseg writes brats2024).")] = "brats2024",
    workers: Workers = 1,
    fail_fast: FailFast = False,
    legacy_pred: LegacyPred = None,
    legacy_gt: LegacyGt = None,
) -> None:
    """Score predictions as the challenge does: the BraTS 2024 GLI lesion-wise metrics (default) or the 2026 panoptica ones."""
    from gliomaseg.evaluation.evaluate import evaluate, format_summary, summarise

    pred = _one_of(pred, legacy_pred, "--pred", "a first argument PRED", "the predictions")
    gt = _one_of(gt, legacy_gt, "--gt", "a second argument GT", "the ground truths")
    scoring = _protocol(protocol, corrected)
    results = evaluate(pred, gt, out_csv=_one_of(out, None, "", "-o/--out", "the output table"), lesions_csv=lesions,
                       summary_csv=summary, missing=missing, workers=workers, protocol=scoring, fail_fast=fail_fast,
                       quiet=_state["quiet"], gt_scheme=label_scheme, pred_scheme=pred_label_scheme)
    typer.echo(format_summary(summarise(results), len(results), scoring))


@app.command(name="measure")
@handles_input_errors
def measure_command(
    predictions: Annotated[Path, typer.Argument(help="Predictions folder (<exam>.nii.gz; <exam>-native.nii.gz is measured where "
                                                     "present) or one label map.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Per-exam CSV: volumes, enhancing lesions, sum of products, change over time.")],
    lesions: Annotated[Optional[Path], typer.Option(help="Per-lesion CSV: each enhancing lesion's diameters, product and ends.")] = None,
    timepoints: Annotated[Optional[Path], typer.Option(help="CSV of exam, patient, date (YYYY-MM-DD) (default: BraTS names, "
                                                            "<patient>-<timepoint>).")] = None,
    exams: Annotated[Optional[Path], typer.Option(help="The exams' case folders: check each label map lies on its exam's grid.")] = None,
) -> None:
    """Tumour measurements: volumes of every label and region, RANO-style bidimensional products of the enhancing
    lesions, and per patient the change from baseline and from the smallest sum (RANO 2.0's thresholds, as measurement
    categories, not response assessments)."""
    from gliomaseg.measurement.measure import measure

    measured = measure(predictions, out, lesions_csv=lesions, timepoints=timepoints, exams_dir=exams)
    patients = len(measured.by_patient())
    lesions_count = sum(len(e.lesions) for e in measured.exams)
    typer.echo(f"measured {len(measured.exams)} exam(s) of {patients} patient(s), {lesions_count} enhancing lesion(s): {out}", err=True)


postprocess_app = typer.Typer(no_args_is_help=True, help="Tune post-processing rules on validation cases, or apply them to label maps.")
app.add_typer(postprocess_app, name="postprocess")


@postprocess_app.command(name="tune")
@handles_input_errors
def postprocess_tune(
    pred: Annotated[Optional[Path], typer.Argument(help="Folder of predicted label maps (validation cases).", show_default=False)] = None,
    gt: Annotated[Optional[Path], typer.Argument(help="Their ground truths (file layouts as for evaluate).", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Rules file to write (JSON).")] = None,
    label_scheme: LabelScheme = "brats2024",
    protocol: ScoringProtocol = "brats2024",
    workers: Workers = 1,
    min_support: Annotated[float, typer.Option(
        min=0.0, max=0.999,
        help="Move a rule only if its gain shows in this share of bootstrap resamples of the cases (e.g. 0.95), so that "
             "one or two cases cannot move it; 0: any gain of a lesion's worth moves it. Needs a dozen cases or more.")] = 0.0,
    legacy_pred: LegacyPred = None,
    legacy_gt: LegacyGt = None,
) -> None:
    """Search the rules that maximise the mean lesion-wise Dice (2024 protocol) or panoptic quality (2026) on these cases."""
    from gliomaseg.postprocessing.rules import save_rules
    from gliomaseg.postprocessing.tuning import load_validation_cases, tune_rules

    pred = _one_of(pred, legacy_pred, "--pred", "a first argument PRED", "the predictions")
    gt = _one_of(gt, legacy_gt, "--gt", "a second argument GT", "the ground truths")
    target = _one_of(out, None, "", "-o/--out", "the rules file")
    cases = load_validation_cases(pred, gt, label_scheme, workers, _state["quiet"])
    scoring = _protocol(protocol)
    result = tune_rules(cases, scoring, workers=workers, min_support=min_support)
    save_rules(result.rules, target, result.provenance(scoring))
    typer.echo(f"mean {scoring.metric} on {len(cases)} case(s): {result.before.dice:.4f} -> {result.after.dice:.4f} "
               f"with {result.rules.to_dict()}; wrote {target}")


@postprocess_app.command(name="apply")
@handles_input_errors
def postprocess_apply(
    rules: Annotated[Path, typer.Argument(help="Rules file (from postprocess tune, or a run's postprocess.json).")],
    pred: Annotated[Optional[Path], typer.Argument(help="Label map or folder of label maps.", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (same file names).")] = None,
    fail_fast: FailFast = False,
    legacy_pred: LegacyPred = None,
) -> None:
    """Clean label maps with a rules file."""
    from gliomaseg.postprocessing.apply import apply_rules
    from gliomaseg.postprocessing.rules import load_rules

    pred = _one_of(pred, legacy_pred, "--pred", "a second argument PRED", "the label maps")
    target = _one_of(out, None, "", "-o/--out", "the output folder")
    _finish(apply_rules(load_rules(rules), pred, target, fail_fast, _state["quiet"]), "postprocess")


@app.command()
@handles_input_errors
def show(
    case_dir: Annotated[Path, typer.Argument(help="Case folder (its -seg, if any, is drawn on the left).")],
    pred: Annotated[Optional[Path], typer.Argument(help="Predicted label map (.nii.gz), drawn on the right.", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="PNG to write (default: <case>.png beside the prediction).")] = None,
    modality: Annotated[Modality, typer.Option(help="The sequence drawn under the labels.")] = "t2f",
    label_scheme: LabelScheme = "brats2024",
    legacy_pred: LegacyPred = None,
) -> None:
    """Draw ground truth (left) beside prediction (right) in three planes through the lesion."""
    from gliomaseg.io.cases import load_case, read_case_folder
    from gliomaseg.io.nifti import load_label_map
    from gliomaseg.visualization.overlays import plot_overlay

    pred = _one_of(pred, legacy_pred, "--pred", "a second argument PRED", "the prediction")
    case = load_case(read_case_folder(case_dir), label_scheme=label_scheme)
    prediction = load_label_map(pred)
    if prediction.data.shape != case.image.shape[1:]:
        raise InputError(pred, f"shape {prediction.data.shape} differs from the case's {case.image.shape[1:]}")
    target = out or pred.parent / f"{case.case_id}.png"
    plot_overlay(case.image, prediction.data, target, ground_truth=case.label, title=case.case_id, modality=modality)
    typer.echo(str(target))


@app.command()
@handles_input_errors
def report(
    source: Annotated[Path, typer.Argument(help="Run folder, evaluation folder or demo output folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML page to write (viewer volumes go to <name>_files/ beside it).")] = Path("report.html"),
    data: Annotated[Optional[list[Path]], typer.Option(help="Case folders, for overlays and viewers (default: SOURCE/data/*).")] = None,
    pred: Annotated[Optional[Path], typer.Option(help="Predictions folder (default: SOURCE/predictions).")] = None,
    label_scheme: Annotated[Scheme, typer.Option(help=f"How the case folders' -seg files are written: {SCHEMES_HELP}.")] = "brats2024",
    no_viewer: Annotated[bool, typer.Option("--no-viewer", help="No interactive 3D viewers: one self-contained file.")] = False,
    timepoints: Annotated[Optional[Path], typer.Option(help="CSV of exam, patient, date for the measurements over time "
                                                            "(default: BraTS names).")] = None,
) -> None:
    """Write the HTML report: curves, sortable metrics, overlays, a 3D viewer per case, tumour measurements over time."""
    from gliomaseg.report.html_report import build_report

    typer.echo(str(build_report(source, out, data, pred, label_scheme=label_scheme, viewer=not no_viewer, timepoints=timepoints)))


@app.command()
@handles_input_errors
def view(
    case_dir: Annotated[Path, typer.Argument(help="Case folder (<case>-{t1n,t1c,t2w,t2f}.nii.gz; its -seg, if any, is the ground truth).")],
    pred: Annotated[Optional[Path], typer.Option(help="Predicted label map to overlay (.nii.gz).")] = None,
    gt: Annotated[Optional[Path], typer.Option(help="Ground-truth label map, if not the case folder's -seg.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Page to write (default: <case>-view.html here).")] = None,
    label_scheme: LabelScheme = "brats2024",
    open_page: Annotated[bool, typer.Option("--open/--no-open", help="Open the page in a web browser when one is at hand.")] = True,
) -> None:
    """Write one case's interactive 3D viewer page (sequences, ground truth and prediction overlays) and open it."""
    import webbrowser
    from dataclasses import replace

    import numpy as np

    from gliomaseg.io.cases import load_case, read_case_folder
    from gliomaseg.io.nifti import load_label_map
    from gliomaseg.report.viewer import view_page

    case = load_case(read_case_folder(case_dir), label_scheme=label_scheme)
    overlays = {}
    for name, path, scheme in (("prediction", pred, "brats2024"), ("ground truth", gt, label_scheme)):
        if path is not None:
            volume = load_label_map(path, scheme)
            if volume.data.shape != case.image.shape[1:] or not np.allclose(volume.affine, case.affine, atol=1e-3):
                raise InputError(path, f"{name} is not on the case's grid (shape {volume.data.shape}, case {case.image.shape[1:]})")
            overlays[name] = volume.data
    if "ground truth" in overlays:
        case = replace(case, label=overlays["ground truth"])
    page = view_page(case, out or Path(f"{case.case_id}-view.html"), overlays.get("prediction"))
    typer.echo(str(page))
    if open_page and sys.stdout.isatty():
        webbrowser.open(page.resolve().as_uri())


@app.command()
@handles_input_errors
def demo(out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the demo's data, run, predictions and report.")] = Path("demo_out")) -> None:
    """Synthesise data, train VNet3d on the CPU, predict, score and draw (minutes)."""
    from gliomaseg.demo import run_demo

    run_demo(out, quiet=_state["quiet"])


if __name__ == "__main__":
    app()
