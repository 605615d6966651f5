"""Apply post-processing rules to label-map files (``gliomaseg postprocess apply``)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from gliomaseg.batch import BatchReport, run_batch
from gliomaseg.errors import InputError
from gliomaseg.io.nifti import NIFTI_SUFFIX
from gliomaseg.io.nifti import load_label_map, save_label_map
from gliomaseg.postprocessing.rules import PostprocessRules


def _label_map_files(pred: Path) -> list[Path]:
    if pred.is_file():
        return [pred]
    if not pred.is_dir():
        raise InputError(pred, "does not exist")
    files = sorted(p for p in pred.iterdir() if p.name.endswith(NIFTI_SUFFIX) and not p.name.startswith("."))
    if not files:
        raise InputError(pred, f"no {NIFTI_SUFFIX} label maps in this folder")
    return files


def _apply_to_file(path: Path, rules: PostprocessRules, out_dir: Path) -> Path:
    labels = load_label_map(path)
    return save_label_map(rules.apply(labels.data), labels.affine, out_dir / path.name, labels.space)


def apply_rules(rules: PostprocessRules, pred: Path | str, out_dir: Path | str, fail_fast: bool = False,
                quiet: bool = False) -> BatchReport[Path]:
    """Write every label map of ``pred`` (a file or a folder of ``.nii.gz``), cleaned by ``rules``,
    under the same name into ``out_dir`` (atomically; inputs are never touched)."""
    pred, out_dir = Path(pred), Path(out_dir)
    files = _label_map_files(pred)
    if out_dir.resolve() == (pred if pred.is_dir() else pred.parent).resolve():
        raise InputError(out_dir, "the output folder must not be the input folder (inputs are never overwritten)")
    out_dir.mkdir(parents=True, exist_ok=True)
    return run_batch(files, name=lambda p: p.name, work=partial(_apply_to_file, rules=rules, out_dir=out_dir),
                     desc="postprocess", fail_fast=fail_fast, quiet=quiet)
