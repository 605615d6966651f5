"""Which file of a raw exam is which sequence: by name, or as the user says.

A raw exam folder holds the four sequences as NIfTI files or DICOM series folders, named the way
scanners, PACS exports and converters name them: ``T1``, ``t1_native``, ``T1CE``, ``t1_gd``,
``T2``, ``FLAIR``, ``t2_flair``, ``BraTS-GLI-00001-000-t1c.nii.gz``... A name is split into
tokens at ``-``, ``_``, ``.`` and spaces; a file belongs to the first sequence (in the order
FLAIR, post-contrast T1, native T1, T2) one of whose names is a token. FLAIR goes first because
"t2_flair" also holds "t2"; post-contrast T1 before native T1 because "t1_gd" also holds "t1".
"""

from __future__ import annotations

import re
from pathlib import Path

from gliomaseg.errors import InputError
from gliomaseg.io.nifti import NIFTI_SUFFIX
from gliomaseg.labels import MODALITIES

SEQUENCE_NAMES: dict[str, tuple[str, ...]] = {
    "t2f": ("t2f", "flair", "t2flair"),
    "t1c": ("t1c", "t1ce", "t1gd", "t1post", "t1contrast", "t1km"),
    "t1n": ("t1n", "t1", "t1native", "t1pre", "t1w"),
    "t2w": ("t2w", "t2"),
}
"""Names recognised per sequence, lower case, in the order they are tried."""

NIFTI_SUFFIXES = (NIFTI_SUFFIX, ".nii")


def _stem(path: Path) -> str:
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _is_candidate(path: Path) -> bool:
    """A NIfTI file, or a folder (a DICOM series is a folder of slices)."""
    if path.name.startswith("."):
        return False
    return path.is_dir() or path.name.lower().endswith(NIFTI_SUFFIXES)


def sequence_of(path: Path) -> str | None:
    """The sequence a file or folder name says it holds, or None."""
    parts = re.split(r"[-_. ]+", _stem(path).lower())
    # "t1_gd" and "t2 flair" are often written as two tokens: their concatenations count too.
    tokens = set(parts) | {a + b for a, b in zip(parts, parts[1:])}
    for sequence, names in SEQUENCE_NAMES.items():
        if tokens & set(names):
            return sequence
    return None


def holds_sequences(folder: Path) -> bool:
    """Whether ``folder`` is an exam (holds sequences itself) rather than a folder of exams."""
    return any(_is_candidate(entry) and sequence_of(entry) is not None for entry in folder.iterdir())


def find_sequences(exam: Path, given: dict[str, Path] | None = None) -> dict[str, Path]:
    """``{modality: path}`` for the four sequences of ``exam``; ``given`` ones win over names.

    Raises InputError naming the exam and the file for: no such folder, a sequence with no
    candidate, two candidates for one sequence, or a given path that does not exist.
    """
    given = {k: Path(v) for k, v in (given or {}).items() if v is not None}
    for modality, path in given.items():
        if not path.exists():
            raise InputError(path, f"{exam.name}: the {modality} given does not exist")
    found: dict[str, list[Path]] = {m: [] for m in MODALITIES}
    if exam.is_dir():
        for entry in sorted(exam.iterdir()):
            sequence = sequence_of(entry) if _is_candidate(entry) else None
            if sequence is not None and sequence not in given:
                found[sequence].append(entry)
    elif not given:
        raise InputError(exam, "is not a folder of sequences")
    chosen = dict(given)
    for modality in MODALITIES:
        if modality in chosen:
            continue
        candidates = found[modality]
        if not candidates:
            raise InputError(exam, f"no {modality} sequence found (names tried: {', '.join(SEQUENCE_NAMES[modality])}); "
                                   f"give it with --{modality}")
        if len(candidates) > 1:
            raise InputError(candidates[1], f"{exam.name}: two candidates for {modality} ({candidates[0].name}, "
                                            f"{candidates[1].name}); give the right one with --{modality}")
        chosen[modality] = candidates[0]
    return {m: chosen[m] for m in MODALITIES}
