"""The ``gliomaseg`` command: a thin layer that parses arguments and calls the API."""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path
from collections.abc import Iterable
from typing import Annotated, Optional

import typer

from gliomaseg import __version__
from gliomaseg.errors import InputError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Post-treatment glioma segmentation (BraTS 2024 GLI): check, preprocess, train, predict, evaluate, show.")
log = logging.getLogger("gliomaseg")
_state = {"quiet": False}

Workers = Annotated[int, typer.Option("--workers", "-j", help="Parallel processes.")]
FailFast = Annotated[bool, typer.Option("--fail-fast", help="Stop at the first bad case instead of reporting it and going on.")]


def _check_one_of(value: str | None, choices: Iterable[str]) -> str | None:
    """An option callback's check: ``value`` (None: not given) must be one of ``choices``."""
    if value is not None and value not in choices:
        raise typer.BadParameter(f"'{value}' is not one of {', '.join(choices)}")
    return value


def _known_label_scheme(value: str | None) -> str | None:
    from gliomaseg.labels import LABEL_SCHEMES

    return _check_one_of(value, LABEL_SCHEMES)


def _known_protocol(value: str | None) -> str | None:
    from gliomaseg.evaluation.protocol import PROTOCOLS

    return _check_one_of(value, PROTOCOLS)


def _known_augmentation(value: str | None) -> str | None:
    from gliomaseg.config import AUGMENTATIONS

    return _check_one_of(value, AUGMENTATIONS)


ScoringProtocol = Annotated[str, typer.Option(
    "--protocol", help="brats2024 (the 2024 lesion-wise code, also used in 2025) or brats2026 (brats-evaluation / panoptica).",
    callback=_known_protocol)]


def _protocol(name: str, corrected: bool = False):
    """The protocol object for ``--protocol`` (and ``--corrected``, which only the 2024 code has)."""
    from gliomaseg.evaluation.protocol import protocol_named

    try:
        return protocol_named(name, corrected)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None


_SCHEMES = "brats2024 (4 = resection cavity) or brats2021 (BraTS 2017-2021: 4 = enhancing tumour, read as 3)"
LabelScheme = Annotated[str, typer.Option(help=f"How the label files are written: {_SCHEMES}.", callback=_known_label_scheme)]


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def handles_input_errors(command):
    """Turn InputError into a one-line message and exit status 1 (no traceback)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except InputError as err:
            _fail(str(err))
        except OSError as err:  # unwritable output, full disk, a file where a folder should be
            _fail(f"{err.filename or 'output'}: {err.strerror or err}")
        except KeyboardInterrupt:
            _fail("interrupted", 130)

    return wrapper


def _finish(report, what: str) -> None:
    typer.echo(report.summary(what), err=True)
    if not report.ok:
        raise typer.Exit(1)


@app.callback()
def main(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors; no progress bars.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    level = logging.ERROR if quiet else logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(message)s", stream=sys.stderr, force=True)
    _state["quiet"] = quiet


@app.command(name="models")
def models_command() -> None:
    """List the models shipped with gliomaseg: name, what it is, its cross-validated scores, its card."""
    from gliomaseg.model.packaged import DEFAULT_MODEL, packaged_models

    models = packaged_models()
    if not models:
        _fail("no packaged model in this installation")
    for name, model in models.items():
        cv = model.info.get("cross_validation", {})
        scores = ", ".join(f"{region} {stat['mean']:.3f}" for region, stat in cv.get("dice", {}).items())
        typer.echo(f"{name}{' (default)' if name == DEFAULT_MODEL else ''}: {model.summary}")
        if scores:
            typer.echo(f"    {cv.get('folds')}-fold cross-validation on {cv.get('cases')} real cases, lesion-wise Dice: {scores}")
        typer.echo(f"    card: {model.run.model_card}")


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
@handles_input_errors
def check(data_dir: Path, workers: Workers = 1, label_scheme: LabelScheme = "brats2024") -> None:
    """Validate case folders and print dataset statistics."""
    from gliomaseg.preprocessing.dataset_stats import check_dataset, format_report

    report = check_dataset(data_dir, workers=workers, quiet=_state["quiet"], label_scheme=label_scheme)
    typer.echo(format_report(report))
    _finish(report, "check")


@app.command()
@handles_input_errors
def synth(
    out_dir: Path,
    cases: Annotated[int, typer.Option(min=1)] = 4,
    seed: int = 0,
    shape: Annotated[tuple[int, int, int], typer.Option(help="Grid, e.g. 240 240 155 for SRI-24.")] = (182, 218, 182),
    workers: Workers = 1,
) -> None:
    """Write synthetic post-treatment cases in BraTS layout (with -seg)."""
    from gliomaseg.data.synthetic import write_synthetic_dataset

    folders = write_synthetic_dataset(out_dir, cases, seed=seed, shape=shape, workers=workers, quiet=_state["quiet"])
    typer.echo(f"wrote {len(folders)} cases to {out_dir}", err=True)


@app.command()
@handles_input_errors
def preprocess(
    data_dir: Path,
    out_dir: Path,
    size: Annotated[int, typer.Option(help="Cubic network grid side.")] = 160,
    label_scheme: LabelScheme = "brats2024",
    workers: Workers = 1,
    overwrite: bool = False,
    fail_fast: FailFast = False,
) -> None:
    """Crop, normalise and resize every case into a fast memory-mapped cache."""
    from gliomaseg.config import PreprocessConfig
    from gliomaseg.preprocessing.cache import preprocess_dataset

    config = PreprocessConfig(size=(size,) * 3, label_scheme=label_scheme)
    report = preprocess_dataset(data_dir, out_dir, config, workers, overwrite, fail_fast, _state["quiet"])
    _finish(report, "preprocess")


@app.command(name="prepare")
@handles_input_errors
def prepare_command(
    input_path: Annotated[Path, typer.Argument(help="One exam folder (NIfTI files or DICOM series folders, recognised by name) or a folder of exam folders.")],
    out_dir: Path,
    t1n: Annotated[Optional[Path], typer.Option(help="The native T1 file or DICOM folder (one exam; overrides name recognition).")] = None,
    t1c: Annotated[Optional[Path], typer.Option(help="The post-contrast T1.")] = None,
    t2w: Annotated[Optional[Path], typer.Option(help="The T2.")] = None,
    t2f: Annotated[Optional[Path], typer.Option(help="The FLAIR.")] = None,
    atlas: Annotated[str, typer.Option(help="mni152 (the BraTS 2024 grid, 182x218x182 at 1 mm) or a skull-stripped T1 template file.")] = "mni152",
    accurate: Annotated[bool, typer.Option("--accurate", help="HD-BET's five folds with mirroring (about 40x slower on a CPU than the default single fold).")] = False,
    n4: Annotated[bool, typer.Option("--n4", help="N4 bias-field correction before registration.")] = False,
    device: Annotated[Optional[str], typer.Option(help="Where HD-BET runs (cpu, cuda, cuda:1); default: a GPU when there is one.")] = None,
    overwrite: bool = False,
    fail_fast: FailFast = False,
) -> None:
    """Raw exams (skull on, any orientation and voxel size) -> co-registered, skull-stripped BraTS-layout cases on the atlas grid."""
    from gliomaseg.preparation.prepare import PrepareOptions, prepare

    given = {"t1n": t1n, "t1c": t1c, "t2w": t2w, "t2f": t2f}
    report = prepare(input_path, out_dir, PrepareOptions(atlas, accurate, n4, device), given=given, overwrite=overwrite,
                     fail_fast=fail_fast, quiet=_state["quiet"])
    _finish(report, "prepare")


@app.command()
@handles_input_errors
def restore(
    labels: Annotated[Path, typer.Argument(help="A label map on a prepared case's grid (e.g. a prediction).")],
    prepared_case: Annotated[Path, typer.Argument(help="The prepared case folder (holds prepare.json).")],
    out: Annotated[Path, typer.Argument(help="Where to write the label map on the original t1c's grid.")],
) -> None:
    """Put a segmentation of a prepared case back on the patient's original t1c grid and affine."""
    from gliomaseg.preparation.restore import restore as restore_labels

    typer.echo(f"wrote {restore_labels(labels, prepared_case, out)}", err=True)


def _known_preset(value: str) -> str:
    from gliomaseg.config import PRESETS

    return _check_one_of(value, PRESETS)


@app.command(name="train")
@handles_input_errors
def train_command(
    data: Annotated[Path, typer.Argument(help="Case folders or a preprocessed cache.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder.")],
    preset: Annotated[str, typer.Option(help="recipe (the baseline recipe) or cpu (a 2-core machine: 64^3, 40 epochs, batch 2). "
                                             "Options given explicitly win over the preset.", callback=_known_preset)] = "recipe",
    model: Annotated[Optional[str], typer.Option(help="vnet3d (the recipe's), monai-vnet, segresnet or dynunet.")] = None,
    targets: Annotated[Optional[str], typer.Option(help="labels (softmax over 0-4) or regions (sigmoid WT, TC, ET, RC).")] = None,
    size: Annotated[Optional[int], typer.Option(help="Cubic network grid side (default: the preset's, or a cache's own).")] = None,
    label_scheme: Annotated[Optional[str], typer.Option(help=f"How the label files are written: {_SCHEMES}; default brats2024, or a cache's own.",
                                                        callback=_known_label_scheme)] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Default 300 (cpu preset: 40).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Per process. Default 4 (cpu preset: 2).")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate, annealed to 0. Default 1e-3.")] = None,
    optimizer: Annotated[Optional[str], typer.Option(help="adamw (the recipe) or sgd.")] = None,
    repeats: Annotated[Optional[int], typer.Option(help="Augmented copies of each case per epoch. Default 5.")] = None,
    steps_per_epoch: Annotated[Optional[int], typer.Option(min=1, help="Batches per epoch whatever the number of cases "
                                                           "(default: each case --repeats times; cpu preset: 32).")] = None,
    patch_size: Annotated[Optional[int], typer.Option(min=16, help="Train on random cubes of this side (half centred on tumour) "
                                                      "and predict by sliding window (default: the whole grid).")] = None,
    extra_channel: Annotated[Optional[list[str]], typer.Option(help="Extra input channel computed from the sequences: t1c-t1n "
                                                               "(the subtraction image). Repeatable.")] = None,
    val_every: Annotated[Optional[int], typer.Option(help="Epochs between validations. Default 10.")] = None,
    val_fraction: float = 0.2,
    folds: Annotated[int, typer.Option(help="k-fold cross-validation by patient (0: one split by --val-fraction).")] = 0,
    fold: Annotated[int, typer.Option(help="Which fold to train, 0..folds-1.")] = 0,
    seed: int = 0,
    deterministic: Annotated[bool, typer.Option(help="Deterministic kernels (slower on GPUs).")] = False,
    device: Annotated[Optional[str], typer.Option(help="cpu or cuda (default: cuda if available).")] = None,
    resume: bool = False,
    dropout: Annotated[Optional[float], typer.Option(help="Dropout probability of every dropout layer (VNet3d: its skip connections).")] = None,
    augment: Annotated[Optional[str], typer.Option(help="basic (the recipe's; default), multisite (each sequence varied on its "
                                                   "own, thick-slice and blur imitation; --preset cpu's) or none.", callback=_known_augmentation)] = None,
    no_augment: Annotated[bool, typer.Option("--no-augment", help="Train without augmentation (--augment none).")] = False,
    modality_dropout: Annotated[Optional[float], typer.Option(min=0.0, max=0.9, help="Each training sample loses each sequence with this "
                                                              "probability (never all four), so the model can predict cases missing some. Default 0.")] = None,
    no_amp: Annotated[bool, typer.Option("--no-amp", help="Full precision on CUDA.")] = False,
    cpu_bf16: Annotated[Optional[bool], typer.Option("--cpu-bf16/--no-cpu-bf16", help="Train in bf16 on CPUs with native bf16 "
                                                     "(AVX512-BF16/AMX): ~2x faster steps, not bit-reproducible (cpu preset: on).")] = None,
    sync_bn: Annotated[bool, typer.Option("--sync-bn/--no-sync-bn", help="Under torchrun on GPUs: BatchNorm statistics over all processes.")] = True,
    compile_model: Annotated[bool, typer.Option("--compile", help="torch.compile the network (worth it on GPUs for long runs).")] = False,
    protocol: Annotated[Optional[str], typer.Option(help="What validation and post-processing tuning score: brats2024 (lesion-wise Dice, "
                                                         "default) or brats2026 (panoptic quality).", callback=_known_protocol)] = None,
    tune_postprocess: Annotated[bool, typer.Option("--tune-postprocess/--no-tune-postprocess",
                                                   help="After the last epoch, tune post-processing rules on the validation cases (RUN/postprocess.json).")] = True,
    init_from: Annotated[Optional[str], typer.Option(help="Fine-tune: start from the weights of a packaged model (`gliomaseg models`), "
                                                     "run folder or checkpoint, with a fresh schedule. Same network, targets and inputs.")] = None,
    workers: Workers = 2,
) -> None:
    """Train a network with the baseline recipe (or a preset); checkpoints, metrics.csv and curves go to --out."""
    from gliomaseg.config import ExperimentConfig, train_config_for
    from gliomaseg.evaluation.protocol import protocol_named
    from gliomaseg.training.run_tuning import tune_run_postprocessing
    from gliomaseg.training.trainer import preprocess_config_for, train

    try:
        config = ExperimentConfig(
            preprocess=preprocess_config_for(data, size, label_scheme, preset, extra_channel),
            train=train_config_for(
                preset, model=model, targets=targets, dropout=dropout, epochs=epochs, batch_size=batch_size, lr=lr,
                optimizer=optimizer, repeats=repeats, steps_per_epoch=steps_per_epoch, patch_size=patch_size,
                augment="none" if no_augment else augment, modality_dropout=modality_dropout,
                val_fraction=val_fraction,
                folds=folds, fold=fold, val_every=val_every, seed=seed, deterministic=deterministic,
                amp=False if no_amp else None, cpu_bf16=cpu_bf16, sync_batchnorm=sync_bn, compile=compile_model, num_workers=workers,
                tune_postprocess=tune_postprocess, protocol=protocol, init_from=init_from,
            ),
            preset=preset,
        )
        result = train(data, out, config, device=device, resume=resume, workers=workers, quiet=_state["quiet"])
    except ValueError as err:
        _fail(str(err))
    if result.completed and result.config.train.tune_postprocess and os.environ.get("RANK", "0") == "0":
        tune_run_postprocessing(out, data, workers, device)
    metric = protocol_named(result.config.train.protocol).metric
    typer.echo(f"trained {result.epochs_done} epochs; best validation mean {metric} {result.best_score:.3f}; run in {out}", err=True)


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
    out_dir: Path,
    model: Annotated[Optional[list[str]], typer.Option("--model", "-m", help="Packaged model name (`gliomaseg models`), run folder or "
                                                       "checkpoint; repeat it to average several models' probabilities (an ensemble). "
                                                       "Default: the packaged model.")] = None,
    device: Optional[str] = None,
    tta: Annotated[bool, typer.Option(help="Average over the 8 axis flips.")] = False,
    overwrite: bool = False,
    fail_fast: FailFast = False,
    shard: Annotated[Optional[str], typer.Option(help="Only the i-th of n shares of the cases, as i/n (array jobs); under torchrun, one share per rank.")] = None,
    no_postprocess: Annotated[bool, typer.Option("--no-postprocess", help="Skip the run's post-processing rules (RUN/postprocess.json).")] = False,
    rules: Annotated[Optional[Path], typer.Option(help="Post-processing rules file to apply instead of the run's own.")] = None,
    save_probabilities: Annotated[bool, typer.Option("--save-probabilities", help="Also write OUT_DIR/<case>.npz (native-grid probabilities) for `gliomaseg ensemble`.")] = False,
    native: Annotated[bool, typer.Option("--native", help="Cases made by `gliomaseg prepare`: also write OUT_DIR/<case>-native.nii.gz on the original t1c's grid and affine.")] = False,
) -> None:
    """Segment cases; writes OUT_DIR/<case>.nii.gz on each input's own grid, post-processed by the run's tuned rules."""
    from gliomaseg.inference.predictor import predict

    if no_postprocess and rules:
        raise typer.BadParameter("give --rules or --no-postprocess, not both")
    if shard is None:
        shard = f"{os.environ.get('RANK', '0')}/{os.environ.get('WORLD_SIZE', '1')}"
    if not model:
        from gliomaseg.model.packaged import DEFAULT_MODEL, packaged_models

        shipped = packaged_models().get(DEFAULT_MODEL)
        log.info("using the packaged model %s%s (no --model given; `gliomaseg models` lists them)", DEFAULT_MODEL,
                 f": {shipped.summary}" if shipped else "")
    report = predict(input_path, out_dir, model or None, device=device, flip_tta=tta, overwrite=overwrite, fail_fast=fail_fast,
                     shard_spec=_parse_shard(shard), quiet=_state["quiet"], postprocess=rules or not no_postprocess,
                     save_probabilities=save_probabilities, native=native)
    _finish(report, "predict")


@app.command(name="ensemble")
@handles_input_errors
def ensemble_command(
    folders: Annotated[list[Path], typer.Argument(help="Folders written by `predict --save-probabilities`, one per run.")],
    out: Annotated[Path, typer.Option(help="Folder for the ensemble's <case>.nii.gz.")],
    rules: Annotated[Optional[Path], typer.Option(help="Post-processing rules file to apply (none by default).")] = None,
    overwrite: bool = False,
    fail_fast: FailFast = False,
) -> None:
    """Average saved probabilities of several runs per case and write the label maps."""
    from gliomaseg.inference.ensemble import ensemble_folders
    from gliomaseg.postprocessing.rules import PostprocessRules, load_rules

    report = ensemble_folders(folders, out, rules=load_rules(rules) if rules else PostprocessRules(), overwrite=overwrite,
                              fail_fast=fail_fast, quiet=_state["quiet"])
    _finish(report, "ensemble")


@app.command(name="evaluate")
@handles_input_errors
def evaluate_command(
    pred: Annotated[Path, typer.Option(help="Prediction file or folder.")],
    gt: Annotated[Path, typer.Option(help="Ground-truth file or folder.")],
    out: Annotated[Path, typer.Option(help="Per-case, per-region CSV (the protocol's own column names).")],
    lesions: Annotated[Optional[Path], typer.Option(help="Per-lesion CSV (2026: brats-evaluation's reference-lesion list).")] = None,
    summary: Annotated[Optional[Path], typer.Option(help="Summary statistics CSV.")] = None,
    missing: Annotated[str, typer.Option(help="'error', or 'empty' to score a missing prediction as empty.")] = "error",
    protocol: ScoringProtocol = "brats2024",
    corrected: Annotated[bool, typer.Option(help="brats2024 only: fix the official code's inconsistencies (not challenge numbers).")] = False,
    label_scheme: Annotated[str, typer.Option(help=f"How the ground-truth files are written: {_SCHEMES}.", callback=_known_label_scheme)] = "brats2024",
    pred_label_scheme: Annotated[str, typer.Option(help="Label scheme of the predictions (gliomaseg writes brats2024).",
                                                   callback=_known_label_scheme)] = "brats2024",
    workers: Workers = 1,
    fail_fast: Annotated[bool, typer.Option(help="Stop at the first bad pair (default) or score the rest.")] = True,
) -> None:
    """Score predictions as the challenge does: the BraTS 2024 GLI lesion-wise metrics (default) or the 2026 panoptica ones."""
    from gliomaseg.evaluation.evaluate import evaluate, format_summary, summarise

    if missing not in ("error", "empty"):
        raise typer.BadParameter("--missing must be 'error' or 'empty'")
    scoring = _protocol(protocol, corrected)
    results = evaluate(pred, gt, out_csv=out, lesions_csv=lesions, summary_csv=summary, missing=missing, workers=workers,
                       protocol=scoring, fail_fast=fail_fast, quiet=_state["quiet"], gt_scheme=label_scheme,
                       pred_scheme=pred_label_scheme)
    typer.echo(format_summary(summarise(results), len(results), scoring))


postprocess_app = typer.Typer(no_args_is_help=True, help="Tune post-processing rules on validation cases, or apply them to label maps.")
app.add_typer(postprocess_app, name="postprocess")


@postprocess_app.command(name="tune")
@handles_input_errors
def postprocess_tune(
    pred: Annotated[Path, typer.Option(help="Folder of predicted label maps (validation cases).")],
    gt: Annotated[Path, typer.Option(help="Their ground truths (file layouts as for evaluate).")],
    out: Annotated[Path, typer.Option(help="Rules file to write (JSON).")],
    label_scheme: LabelScheme = "brats2024",
    protocol: ScoringProtocol = "brats2024",
    workers: Workers = 1,
) -> None:
    """Search the rules that maximise the mean lesion-wise Dice (2024 protocol) or panoptic quality (2026) on these cases."""
    from gliomaseg.postprocessing.rules import save_rules
    from gliomaseg.postprocessing.tuning import load_validation_cases, tune_rules

    cases = load_validation_cases(pred, gt, label_scheme, workers, _state["quiet"])
    scoring = _protocol(protocol)
    result = tune_rules(cases, scoring, workers=workers)
    save_rules(result.rules, out, result.provenance(scoring))
    typer.echo(f"mean {scoring.metric} on {len(cases)} case(s): {result.before.dice:.4f} -> {result.after.dice:.4f} "
               f"with {result.rules.to_dict()}; wrote {out}")


@postprocess_app.command(name="apply")
@handles_input_errors
def postprocess_apply(
    rules: Annotated[Path, typer.Argument(help="Rules file (from postprocess tune, or RUN/postprocess.json).")],
    pred: Annotated[Path, typer.Option(help="Label map or folder of label maps.")],
    out: Annotated[Path, typer.Option(help="Output folder (same file names).")],
    fail_fast: FailFast = False,
) -> None:
    """Clean label maps with a rules file."""
    from gliomaseg.postprocessing.apply import apply_rules
    from gliomaseg.postprocessing.rules import load_rules

    _finish(apply_rules(load_rules(rules), pred, out, fail_fast, _state["quiet"]), "postprocess")


@app.command()
@handles_input_errors
def show(
    case_dir: Annotated[Path, typer.Argument(help="Case folder (its -seg, if any, is drawn on the left).")],
    pred: Annotated[Path, typer.Option(help="Predicted label map (.nii.gz).")],
    out: Annotated[Optional[Path], typer.Option(help="PNG to write (default: <case>.png beside the prediction).")] = None,
    modality: str = "t2f",
    label_scheme: LabelScheme = "brats2024",
) -> None:
    """Draw ground truth (left) beside prediction (right) in three planes through the lesion."""
    from gliomaseg.io.cases import load_case, read_case_folder
    from gliomaseg.io.nifti import load_label_map
    from gliomaseg.labels import MODALITIES
    from gliomaseg.visualization.overlays import plot_overlay

    if modality not in MODALITIES:
        raise typer.BadParameter(f"--modality must be one of {', '.join(MODALITIES)}")
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
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write.")] = Path("report.html"),
    data: Annotated[Optional[list[Path]], typer.Option(help="Case folders (for overlays); default SOURCE/data/*.")] = None,
    pred: Annotated[Optional[Path], typer.Option(help="Predictions folder; default SOURCE/predictions.")] = None,
    label_scheme: Annotated[str, typer.Option(help=f"How the case folders' -seg files are written: {_SCHEMES}.",
                                              callback=_known_label_scheme)] = "brats2024",
    no_viewer: Annotated[bool, typer.Option("--no-viewer", help="No interactive 3D viewers: one self-contained file "
                                                                "(viewers put each case's volumes in OUT's _files folder).")] = False,
) -> None:
    """Write the HTML report: curves, sortable metrics, overlays, a 3D viewer per case, volumes over time."""
    from gliomaseg.report.html_report import build_report

    typer.echo(str(build_report(source, out, data, pred, label_scheme=label_scheme, viewer=not no_viewer)))


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
def demo(out: Annotated[Path, typer.Option("--out", "-o")] = Path("demo_out")) -> None:
    """Synthesise data, train VNet3d on the CPU, predict, score and draw (a few minutes)."""
    from gliomaseg.demo import run_demo

    run_demo(out, quiet=_state["quiet"])


if __name__ == "__main__":
    app()
