"""Train/validation splits by patient: two timepoints of one patient never straddle a split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gliomaseg.io.atomic import write_text_atomic
from gliomaseg.io.cases import patient_id


def _patients_shuffled(case_ids: list[str], seed: int) -> list[str]:
    patients = sorted({patient_id(c) for c in case_ids})
    order = np.random.default_rng(seed).permutation(len(patients))
    return [patients[i] for i in order]


def kfold_by_patient(case_ids: list[str], folds: int, seed: int = 0) -> list[dict[str, list[str]]]:
    """``folds`` splits; each patient is in exactly one validation fold. Deterministic by seed."""
    patients = _patients_shuffled(case_ids, seed)
    if folds < 2 or folds > len(patients):
        raise ValueError(f"need 2 <= folds <= number of patients ({len(patients)}), got {folds}")
    splits = []
    for fold in range(folds):
        held_out = set(patients[fold::folds])
        splits.append(
            {
                "train": sorted(c for c in case_ids if patient_id(c) not in held_out),
                "val": sorted(c for c in case_ids if patient_id(c) in held_out),
            }
        )
    return splits


def split_by_patient(case_ids: list[str], val_fraction: float, seed: int = 0, block: int = 0) -> dict[str, list[str]]:
    """One train/val split holding out about ``val_fraction`` of the patients (at least one; none for 0).

    ``block`` picks which run of that many patients in the seeded order is held out, so blocks
    0, 1, ... hold out disjoint patients (a k-fold whose fold 0 is the plain split); the last
    block may be shorter."""
    patients = _patients_shuffled(case_ids, seed)
    n_val = min(len(patients) - 1, max(1, round(len(patients) * val_fraction))) if len(patients) > 1 and val_fraction > 0 else 0
    if block < 0 or (block > 0 and block * n_val >= len(patients)):
        raise ValueError(f"block {block} is past the {len(patients)} patients in blocks of {n_val}")
    held_out = set(patients[block * n_val:(block + 1) * n_val])
    return {
        "train": sorted(c for c in case_ids if patient_id(c) not in held_out),
        "val": sorted(c for c in case_ids if patient_id(c) in held_out),
    }


def save_split(split: dict[str, list[str]] | list[dict[str, list[str]]], path: Path | str) -> Path:
    return write_text_atomic(path, json.dumps(split, indent=2) + "\n")


def load_split(path: Path | str) -> dict[str, list[str]]:
    return json.loads(Path(path).read_text())
