"""Predict label maps for new cases with a trained run folder.

The run folder alone is enough: its checkpoint carries the config (preprocessing
and network), so a prediction is always made the way the model was trained.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from functools import cache, partial
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from gliomaseg.batch import BatchReport, run_batch
from gliomaseg.io.atomic import remove_stale_temporaries, write_text_atomic
from gliomaseg.inference.two_stage import refined_probabilities
from gliomaseg.inference.ensemble import SavedProbabilities, common_targets, mean_probabilities, probabilities_path, write_probabilities
from gliomaseg.errors import InputError
from gliomaseg.io.cases import Case, LoadedCase, find_case_folders, load_case, read_case_folder
from gliomaseg.io.nifti import NIFTI_SUFFIX, save_label_map
from gliomaseg.model.loading import LoadedModel, load_model
from gliomaseg.model.packaged import INCOMPLETE_MODEL, packaged_models
from gliomaseg.model.probabilities import predict_probabilities
from gliomaseg.model.targets import Targets
from gliomaseg.postprocessing.rules import PostprocessRules
from gliomaseg.preprocessing.pipeline import native_scores, preprocess_case

if TYPE_CHECKING:  # the prepare extra's modules, imported only where a prepared case is predicted
    from gliomaseg.io.dicom_seg import SourceSeries
    from gliomaseg.preparation.restore import OriginalScan

log = logging.getLogger("gliomaseg")


def native_probabilities(model: LoadedModel, case: LoadedCase, flip_tta: bool = False) -> torch.Tensor:
    """(C, X, Y, Z) float32 probabilities of one run on the case's native grid, in its own targets (a two-stage
    model's: :mod:`gliomaseg.inference.two_stage`)."""
    if model.stage_one is not None:
        return refined_probabilities(model, case, native_probabilities(model.stage_one, case, flip_tta), flip_tta)
    prepared = preprocess_case(case, model.config.preprocess)
    image = torch.from_numpy(prepared.image)[None]
    probabilities = predict_probabilities(model.network, image, model.targets, flip_tta=flip_tta, amp=model.config.train.amp,
                                          patch_size=model.config.train.patch_size)[0]
    return native_scores(probabilities.float().cpu(), prepared.geometry, model.targets.outside)


def ensemble_probabilities(models: Sequence[LoadedModel], case: LoadedCase, flip_tta: bool = False) -> tuple[Targets, torch.Tensor]:
    """The mean native-grid probabilities of ``models`` (one or more runs) and the targets they are in."""
    targets = common_targets([m.targets for m in models])
    return targets, mean_probabilities(((m.targets, native_probabilities(m, case, flip_tta)) for m in models), targets)


def ensemble_rules(models: Sequence[LoadedModel]) -> PostprocessRules:
    """The runs' post-processing rules when they agree; none otherwise (rules tuned for one run
    can hurt the mean of several: tune the ensemble's own with ``postprocess tune`` and pass ``--rules``)."""
    rules = {m.rules for m in models}
    if len(rules) == 1:
        return rules.pop()
    log.warning("the runs have different post-processing rules; none applied to their ensemble (tune its own with "
                "`gliomaseg postprocess tune` and pass --rules)")
    return PostprocessRules()


def output_path(out_dir: Path, case_id: str) -> Path:
    return out_dir / f"{case_id}{NIFTI_SUFFIX}"


def missing_sequences_path(out_dir: Path, case_id: str) -> Path:
    """The sidecar that says which sequences a prediction was made without."""
    return out_dir / f"{case_id}.missing.json"


def accepts_missing_sequences(models: Sequence[LoadedModel]) -> bool:
    """Only models trained with modality dropout have seen zeros where a sequence was: a two-stage model's first stage
    too, which reads the same zero-filled sequences and gates its second."""
    return all(m.config.train.modality_dropout > 0 and (m.stage_one is None or accepts_missing_sequences([m.stage_one]))
               for m in models)


def _record_missing(case: LoadedCase, models: Sequence[LoadedModel], out_dir: Path) -> None:
    sidecar = missing_sequences_path(out_dir, case.case_id)
    if not case.missing:
        sidecar.unlink(missing_ok=True)  # left by an earlier prediction of an incomplete version of this case
        return
    log.warning("%s: no %s; zero-filled, predicted by %s (trained with modality dropout %s)", case.case_id, ", ".join(case.missing),
                model_name(models), "/".join(f"{m.config.train.modality_dropout:g}" for m in models))
    record = {"case": case.case_id, "missing_modalities": list(case.missing), "zero_filled": True,
              "models": [str(m.checkpoint) for m in models]}
    write_text_atomic(sidecar, json.dumps(record, indent=2) + "\n")


def native_output_path(out_dir: Path, case_id: str) -> Path:
    """Where ``predict --native`` writes a prepared case's labels on the original t1c grid."""
    return out_dir / f"{case_id}-native{NIFTI_SUFFIX}"


def model_name(models: Sequence[LoadedModel]) -> str:
    """How outputs name the model: its run folder's (a packaged model's) name; an ensemble's joined by +."""
    return "+".join(m.checkpoint.parent.name for m in models)


def _dicom_source(folder: Path, scan):
    """The original DICOM t1c series a SEG will reference, or None (with one line) when the t1c came as NIfTI."""
    from gliomaseg.io.dicom_seg import source_series

    if scan.dicom_folder is None:
        log.info("%s: its t1c came as a NIfTI file, so no DICOM SEG (written for exams prepared from DICOM)", folder.name)
        return None
    return source_series(scan.dicom_folder, scan.grid.affine, scan.grid.size)


def _models_for(files: Case, models: Sequence[LoadedModel], rules: PostprocessRules,
                incomplete: Callable[[], LoadedModel] | None) -> tuple[Sequence[LoadedModel], PostprocessRules]:
    """The models (and rules) that predict this case: ``models``, or for a case that lacks a sequence they were never
    trained without, the model for incomplete exams (given only when the user chose no model); else an error."""
    if not files.missing or accepts_missing_sequences(models):
        return models, rules
    if incomplete is not None:
        chosen = incomplete()
        return [chosen], chosen.rules
    raise InputError(files.folder / f"{files.case_id}-{files.missing[0]}{NIFTI_SUFFIX}",
                     f"missing modality {', '.join(files.missing)}: {model_name(models)} was trained with all four sequences "
                     f"(a model trained with --modality-dropout predicts without it, e.g. --model {INCOMPLETE_MODEL})")


def _predict_folder(folder: Path, models: Sequence[LoadedModel], rules: PostprocessRules, out_dir: Path, flip_tta: bool,
                    save_probabilities: bool, native: bool = False, dicom_seg: bool = True,
                    incomplete: Callable[[], LoadedModel] | None = None, pre_operative: bool = False) -> Path:
    files = read_case_folder(folder, allow_missing=True)
    models, rules = _models_for(files, models, rules, incomplete)
    case = load_case(files, with_label=False)
    if native:  # before the network runs: a case that cannot go back (or whose DICOM is gone) fails fast
        from gliomaseg.preparation.restore import onto_original_grid, read_original_scan

        scan = read_original_scan(folder)
        series = _dicom_source(folder, scan) if dicom_seg else None
    _record_missing(case, models, out_dir)
    targets, probabilities = ensemble_probabilities(models, case, flip_tta)
    if save_probabilities:  # first: a case counts as done once its label map exists
        saved = SavedProbabilities(targets, probabilities, case.affine, case.space)
        write_probabilities(probabilities_path(out_dir, case.case_id), saved)
    label_map = rules.apply(targets.decode(probabilities, cavity=not pre_operative).numpy())
    if native:
        native_labels = onto_original_grid(label_map, case.affine, scan)
        if series is not None:
            from gliomaseg.io.dicom_seg import seg_path, write_dicom_seg

            write_dicom_seg(native_labels, series, seg_path(out_dir, case.case_id), model_name(models))
        save_label_map(native_labels, scan.grid.affine, native_output_path(out_dir, case.case_id), scan.space)
    return save_label_map(label_map, case.affine, output_path(out_dir, case.case_id), case.space)


def shard(items: list, index: int, count: int) -> list:
    """The ``index``-th of ``count`` interleaved shares of ``items`` (for array jobs)."""
    if not 0 <= index < count:
        raise ValueError(f"shard index must be in 0..{count - 1}, got {index}")
    return items[index::count]


def predict(
    input_path: Path | str,
    out_dir: Path | str,
    model: Path | str | LoadedModel | Sequence[Path | str | LoadedModel] | None = None,
    *,
    device: str | None = None,
    flip_tta: bool = False,
    overwrite: bool = False,
    fail_fast: bool = False,
    shard_spec: tuple[int, int] = (0, 1),
    quiet: bool = False,
    postprocess: bool | Path | str = True,
    save_probabilities: bool = False,
    native: bool = False,
    dicom_seg: bool = True,
    pre_operative: bool = False,
) -> BatchReport[Path]:
    """Predict one case folder or every case folder under ``input_path`` into ``out_dir``.

    Writes ``<out_dir>/<case>.nii.gz`` (uint8, the input's grid and affine) atomically, and with
    ``save_probabilities`` ``<out_dir>/<case>.npz`` (see :mod:`gliomaseg.inference.ensemble`);
    cases already predicted are skipped unless ``overwrite``. Bad cases are reported and skipped
    unless ``fail_fast``. ``model``: a run folder, a checkpoint or a packaged model's name (None: the
    default packaged model, and for a case that lacks a sequence the packaged model for incomplete exams,
    ``INCOMPLETE_MODEL``; a model trained without modality dropout refuses such a case); several models are an ensemble: their probabilities are averaged. ``postprocess`` as in :func:`load_model` (a LoadedModel keeps its
    own rules; an ensemble's are :func:`ensemble_rules`). ``native`` (cases made by ``gliomaseg
    prepare``): also ``<out_dir>/<case>-native.nii.gz``, the labels on the original t1c's grid, and for
    exams prepared from DICOM, unless not ``dicom_seg``, ``<out_dir>/<case>.seg.dcm``: a DICOM SEG that
    references the original t1c series (:mod:`gliomaseg.io.dicom_seg`). ``pre_operative``: the exams are from
    before surgery, so no voxel is labelled resection cavity (RC); each takes its likeliest other label (the saved
    probabilities stay the model's own).
    """
    out_dir = Path(out_dir)
    folders = shard(find_case_folders(input_path), *shard_spec)
    given = [model] if model is None or isinstance(model, (str, Path, LoadedModel)) else list(model)
    models = [m if isinstance(m, LoadedModel) else load_model(m, device, postprocess) for m in given]
    rules = ensemble_rules(models)
    # only for the default model: a model the user chose is never swapped behind their back
    incomplete = cache(partial(load_model, INCOMPLETE_MODEL, device, postprocess)) if model is None and INCOMPLETE_MODEL in packaged_models() else None
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir, stems=[f.name.split(".")[0] for f in folders])  # as atomic_path names them

    def finished(folder: Path) -> bool:
        wanted = ([output_path(out_dir, folder.name)] + ([probabilities_path(out_dir, folder.name)] if save_probabilities else [])
                  + ([native_output_path(out_dir, folder.name)] if native else []))
        return all(path.exists() for path in wanted)

    todo = [f for f in folders if overwrite or not finished(f)]
    skipped = len(folders) - len(todo)
    if skipped:
        log.info("skipping %d case(s) already predicted in %s", skipped, out_dir)
    if pre_operative and todo:
        log.info("pre-operative exams: no voxel is labelled resection cavity (RC); each takes its likeliest other label")
    report = run_batch(
        todo,
        name=lambda f: f.name,
        work=partial(_predict_folder, models=models, rules=rules, out_dir=out_dir, flip_tta=flip_tta,
                     save_probabilities=save_probabilities, native=native, dicom_seg=dicom_seg, incomplete=incomplete,
                     pre_operative=pre_operative),
        desc="predict",
        fail_fast=fail_fast,
        quiet=quiet,
    )
    for folder in folders:
        if folder not in todo:
            report.results[folder.name] = output_path(out_dir, folder.name)
    return report
