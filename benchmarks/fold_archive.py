"""What a finished cross-validation fold leaves in ``results/``, so that another machine can score it.

A fold's run folder (hours of training) lives outside the work tree and is gone when the machine is;
its held-out predictions are all that scoring needs. The archive keeps each prediction as the box of
its labelled voxels (uint8, compressed: a few kB a case), the fold's ``done.json`` and ``timing.json``,
and the brain-box fraction of its training cache (where post-processing tuning starts), in
``results/real_cv_folds/<setup>/fold<K>.npz``. Restoring it rebuilds the fold folder that scoring
reads: the held-out links, the prediction folders and ``done.json``; carved held-out cases are carved
again (seeded, the same voxels). The images are never copied: only our own predictions are kept.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gliomaseg.io.atomic import write_atomic
from gliomaseg.io.nifti import load_label_map, save_label_map

PREDICTION_FOLDERS = ("pred", "pred_carved")
"""Prediction folders of a fold, besides one ``pred_<input>`` per incomplete input."""


def archive_path(results: Path, setup: str, fold: int) -> Path:
    return results / "real_cv_folds" / setup / f"fold{fold}.npz"


def _prediction_folders(fold_dir: Path) -> list[Path]:
    return sorted(p for p in fold_dir.iterdir() if p.is_dir() and (p.name in PREDICTION_FOLDERS or p.name.startswith("pred_")))


def archive_fold(fold_dir: Path, path: Path, box_fraction: float) -> Path:
    """Write the archive of a done fold (``done.json`` present)."""
    arrays: dict[str, np.ndarray] = {}
    for folder in _prediction_folders(fold_dir):
        for prediction in sorted(folder.glob("*.nii.gz")):
            case_id = prediction.name[: -len(".nii.gz")]
            labels = load_label_map(prediction)
            found = np.argwhere(labels.data > 0)
            low, high = (found.min(axis=0), found.max(axis=0) + 1) if len(found) else (np.zeros(3, int), np.zeros(3, int))
            key = f"{folder.name}|{case_id}"
            arrays[f"{key}|labels"] = labels.data[tuple(slice(a, b) for a, b in zip(low, high))]
            arrays[f"{key}|geometry"] = np.concatenate([labels.data.shape, low, labels.affine.ravel()]).astype(np.float64)
    meta = {"done": json.loads((fold_dir / "done.json").read_text()), "box_fraction": box_fraction,
            "timing": json.loads((fold_dir / "timing.json").read_text()) if (fold_dir / "timing.json").exists() else {}}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, lambda tmp: np.savez_compressed(tmp, **arrays))


def archived_meta(path: Path) -> dict:
    with np.load(path) as archive:
        return json.loads(archive["meta"].tobytes())


def restore_fold(path: Path, fold_dir: Path, link_held_out: Callable[[list[str], Path], Path],
                 carve_held_out: Callable[[Path, Path], object]) -> None:
    """Rebuild a fold folder from its archive: ``link_held_out(case_ids, folder)`` links the held-out cases,
    ``carve_held_out(held_out, folder)`` carves them again when the fold predicted carved cases."""
    with np.load(path) as archive:
        meta = json.loads(archive["meta"].tobytes())
        held_out = link_held_out(meta["done"]["val"], fold_dir / "held_out")
        for key in archive.files:
            if not key.endswith("|labels"):
                continue
            folder, case_id, _ = key.split("|")
            geometry = archive[f"{folder}|{case_id}|geometry"]
            shape, low, affine = geometry[:3].astype(int), geometry[3:6].astype(int), geometry[6:].reshape(4, 4)
            crop = archive[key]
            labels = np.zeros(shape, np.uint8)
            labels[tuple(slice(a, a + n) for a, n in zip(low, crop.shape))] = crop
            (fold_dir / folder).mkdir(parents=True, exist_ok=True)
            save_label_map(labels, affine, fold_dir / folder / f"{case_id}.nii.gz")
    if (fold_dir / "pred_carved").is_dir():
        carve_held_out(held_out, fold_dir / "held_out_carved")
    (fold_dir / "timing.json").write_text(json.dumps(meta["timing"], indent=2) + "\n")
    (fold_dir / "done.json").write_text(json.dumps({**meta["done"], "box_fraction": meta["box_fraction"],
                                                    "restored_from": path.name}, indent=2) + "\n")
