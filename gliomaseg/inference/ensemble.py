"""Averaging the probabilities of several runs, and the files that keep them for later.

The 2024 winners average many checkpoints (folds x architectures) before taking labels. Runs that
predict labels (softmax) are averaged as they are; as soon as one run predicts regions
(sigmoids), every run is brought to region probabilities first (a region's probability is the sum
of its labels') and the mean is decoded as a region model's output is.

``predict --save-probabilities`` writes ``<case>.npz`` beside each label map, as nnU-Net does:
the probabilities on the case's native grid (float16: probabilities need no more, and the files
are half the size), what the channels mean, and the reference geometry, so ``gliomaseg ensemble``
can combine runs predicted at different times or on different machines.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from gliomaseg.batch import BatchReport, run_batch
from gliomaseg.errors import InputError
from gliomaseg.io.atomic import atomic_path
from gliomaseg.io.nifti import NIFTI_SUFFIX, HeaderSpace, save_label_map
from gliomaseg.postprocessing.rules import PostprocessRules
from gliomaseg.model.targets import LABELS, REGIONS, Targets, targets_named

PROBABILITIES_SUFFIX = ".npz"


def probabilities_path(folder: Path, case_id: str) -> Path:
    """Where ``predict --save-probabilities`` keeps a case's probabilities, and ``ensemble`` looks."""
    return folder / f"{case_id}{PROBABILITIES_SUFFIX}"


def common_targets(targets: Sequence[Targets]) -> Targets:
    """Labels when every run predicts labels, otherwise regions (the space every run can reach)."""
    return LABELS if all(t == LABELS for t in targets) else REGIONS


def mean_probabilities(parts: Iterable[tuple[Targets, torch.Tensor]], targets: Targets) -> torch.Tensor:
    """Running mean of (C, ...) probabilities in ``targets``' space; ``parts`` is consumed one at a
    time, so only two volumes are ever held, and never changed. A single part is returned as it is:
    copying and dividing a 240x240x155 volume of five channels cost ~0.1 s of a ~1.5 s prediction."""
    total, count = None, 0
    for own, probabilities in parts:
        if own != targets:
            probabilities = own.as_regions(probabilities)
        if total is None:
            total = probabilities
        elif count == 1:
            total = total + probabilities  # from here on ``total`` is a tensor of our own
        else:
            total.add_(probabilities)
        count += 1
    if total is None:
        raise ValueError("nothing to average")
    return total if count == 1 else total.div_(count)


@dataclass(frozen=True)
class SavedProbabilities:
    """One case's probabilities on its native grid, with what places them there."""

    targets: Targets
    probabilities: torch.Tensor  # (C, X, Y, Z) float32
    affine: np.ndarray
    space: HeaderSpace | None


def write_probabilities(path: Path | str, saved: SavedProbabilities) -> Path:
    """Write ``saved`` as a compressed ``.npz`` atomically."""
    arrays = {
        "probabilities": saved.probabilities.numpy().astype(np.float16),
        "targets": np.array(saved.targets.name),
        "affine": saved.affine,
    }
    if saved.space is not None:
        arrays.update({f"space_{key}": np.asarray(value) for key, value in saved.space.to_dict().items()})
    with atomic_path(path) as tmp:
        with tmp.open("wb") as handle:
            np.savez_compressed(handle, **arrays)
    return Path(path)


def _read(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Only these members of an ``.npz`` (each is compressed on its own); never unpickles anything."""
    try:
        with np.load(path, allow_pickle=False) as data:
            # the header space is optional (absent for inputs without one); a missing other key is a KeyError
            return {key: data[key] for key in keys if key in data or not key.startswith("space_")}
    except FileNotFoundError:
        raise InputError(path, "file does not exist") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
        raise InputError(path, f"not a gliomaseg probabilities file ({str(err).splitlines()[0][:120]})") from None


def _targets(path: Path, name: np.ndarray) -> Targets:
    try:
        return targets_named(str(name))
    except ValueError as err:
        raise InputError(path, str(err)) from None


def saved_targets(path: Path | str) -> Targets:
    """What the channels of a probabilities file mean, without decompressing the probabilities."""
    return _targets(Path(path), _read(Path(path), ["targets"])["targets"])


def read_probabilities(path: Path | str) -> SavedProbabilities:
    """Read a file written by :func:`write_probabilities`."""
    path = Path(path)
    space_keys = ("qform", "qform_code", "sform", "sform_code")
    data = _read(path, ["probabilities", "targets", "affine", *(f"space_{k}" for k in space_keys)])
    targets = _targets(path, data["targets"])
    probabilities = torch.from_numpy(data["probabilities"].astype(np.float32))
    if probabilities.ndim != 4 or probabilities.shape[0] != targets.channels:
        raise InputError(path, f"probabilities of shape {tuple(probabilities.shape)} do not match {targets.name} targets")
    space = HeaderSpace.from_dict({k: data[f"space_{k}"] for k in space_keys}) if "space_qform" in data else None
    return SavedProbabilities(targets, probabilities, np.asarray(data["affine"], dtype=np.float64), space)


def _ensemble_case(case_id: str, folders: Sequence[Path], out_dir: Path, rules: PostprocessRules, pre_operative: bool) -> Path:
    paths = [probabilities_path(folder, case_id) for folder in folders]
    for path in paths:
        if not path.exists():
            raise InputError(path, f"missing: every folder needs {case_id}{PROBABILITIES_SUFFIX}")
    targets = common_targets([saved_targets(p) for p in paths])
    first = read_probabilities(paths[0])

    def parts() -> Iterable[tuple[Targets, torch.Tensor]]:
        yield first.targets, first.probabilities
        for path in paths[1:]:
            other = read_probabilities(path)
            if other.probabilities.shape[1:] != first.probabilities.shape[1:] or not np.allclose(other.affine, first.affine, atol=1e-3):
                raise InputError(path, f"grid differs from {paths[0]} (shape or affine)")
            yield other.targets, other.probabilities

    labels = targets.decode(mean_probabilities(parts(), targets), cavity=not pre_operative).numpy()
    return save_label_map(rules.apply(labels), first.affine, out_dir / f"{case_id}{NIFTI_SUFFIX}", first.space)


def ensemble_folders(
    folders: Sequence[Path | str],
    out_dir: Path | str,
    *,
    rules: PostprocessRules = PostprocessRules(),
    overwrite: bool = False,
    fail_fast: bool = False,
    quiet: bool = False,
    pre_operative: bool = False,
) -> BatchReport[Path]:
    """``<out_dir>/<case>.nii.gz`` from the mean probabilities of every case saved in all ``folders``
    (by ``predict --save-probabilities``), post-processed by ``rules``; finished cases are skipped.
    ``pre_operative``: no voxel is labelled resection cavity, as ``predict``'s."""
    folders, out_dir = [Path(f) for f in folders], Path(out_dir)
    for folder in folders:
        if not folder.is_dir():
            raise InputError(folder, "not a folder of probabilities (predict --save-probabilities writes them)")
    case_ids = sorted({p.name[: -len(PROBABILITIES_SUFFIX)] for f in folders for p in f.glob(f"*{PROBABILITIES_SUFFIX}")})
    if not case_ids:
        raise InputError(folders[0], f"no {PROBABILITIES_SUFFIX} probabilities files (predict --save-probabilities writes them)")
    if out_dir.resolve() in {f.resolve() for f in folders}:
        raise InputError(out_dir, "the output folder must not be an input folder")
    todo = [c for c in case_ids if overwrite or not (out_dir / f"{c}{NIFTI_SUFFIX}").exists()]
    out_dir.mkdir(parents=True, exist_ok=True)
    return run_batch(todo, name=str, work=partial(_ensemble_case, folders=folders, out_dir=out_dir, rules=rules, pre_operative=pre_operative),
                     desc="ensemble", fail_fast=fail_fast, quiet=quiet)
