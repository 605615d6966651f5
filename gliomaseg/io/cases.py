"""BraTS case folders: find them, check them, load them.

A case is a folder ``<case>/`` holding ``<case>-{t1n,t1c,t2w,t2f}.nii.gz`` and,
for training, ``<case>-seg.nii.gz``. Any folder name works; the files must carry it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gliomaseg.errors import InputError
from gliomaseg.io.nifti import NIFTI_SUFFIX, HeaderSpace, Volume, load_image, load_label_map
from gliomaseg.labels import DEFAULT_LABEL_SCHEME, MODALITIES, SEG_SUFFIX

_TIMEPOINT = re.compile(r"^(?P<patient>.+)-(?P<timepoint>\d{3})$")


@dataclass(frozen=True)
class Case:
    """Paths of one case's files."""

    case_id: str
    folder: Path
    images: dict[str, Path]  # every modality, unless read with allow_missing
    seg: Path | None

    @property
    def patient_id(self) -> str:
        return patient_id(self.case_id)

    @property
    def missing(self) -> tuple[str, ...]:
        """Modalities this case lacks (only a folder read with ``allow_missing`` can lack any)."""
        return tuple(m for m in MODALITIES if m not in self.images)


@dataclass(frozen=True)
class LoadedCase:
    """A case in memory: ``image`` (4, X, Y, Z) float32 in MODALITIES order, ``label`` (X, Y, Z) uint8 or None."""

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray
    spacing: tuple[float, float, float]
    space: HeaderSpace | None = None  # the reference sequence's header matrices, for writing results placed like it
    missing: tuple[str, ...] = ()  # modalities the folder lacked, zeros in ``image`` (read with allow_missing)


REFERENCE_MODALITY = "t1c"
"""The sequence whose grid, affine and header codes a case's results carry (the first present one if it is missing)."""


def patient_id(case_id: str) -> str:
    """``BraTS-GLI-00001-002`` -> ``BraTS-GLI-00001``; ids without a timepoint are their own patient."""
    match = _TIMEPOINT.match(case_id)
    return match.group("patient") if match else case_id


def timepoint(case_id: str) -> int:
    """The YYY of ``...-YYY`` as an int (0 when the id has none)."""
    match = _TIMEPOINT.match(case_id)
    return int(match.group("timepoint")) if match else 0


def read_case_folder(folder: Path | str, require_seg: bool = False, allow_missing: bool = False) -> Case:
    """Check a case folder's file names and return its paths.

    Raises InputError for a missing (unless ``allow_missing`` and at least one is there) or extra
    modality, or files that do not carry the folder's name.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "case folder does not exist")
    case_id = folder.name
    nifti = sorted(p for p in folder.iterdir() if p.name.endswith(NIFTI_SUFFIX) and not p.name.startswith("."))
    if not nifti:
        raise InputError(folder, f"case folder has no {NIFTI_SUFFIX} files")
    known = {*MODALITIES, SEG_SUFFIX}
    found: dict[str, Path] = {}
    for path in nifti:
        stem = path.name[: -len(NIFTI_SUFFIX)]
        if not stem.startswith(case_id + "-"):
            raise InputError(path, f"file name does not match its folder: expected {expected_names(case_id)}; {PREPARE_HINT}")
        suffix = stem[len(case_id) + 1 :]
        if suffix not in known:
            raise InputError(path, f"unexpected extra modality '{suffix}' (expected {', '.join(MODALITIES)}, seg)")
        found[suffix] = path
    missing = [m for m in MODALITIES if m not in found]
    if missing and (not allow_missing or len(missing) == len(MODALITIES)):
        raise InputError(folder / f"{case_id}-{missing[0]}{NIFTI_SUFFIX}", f"missing modality {', '.join(missing)}")
    if require_seg and SEG_SUFFIX not in found:
        raise InputError(folder / f"{case_id}-{SEG_SUFFIX}{NIFTI_SUFFIX}", "missing segmentation (needed for training)")
    return Case(case_id, folder, {m: found[m] for m in MODALITIES if m in found}, found.get(SEG_SUFFIX))


PREPARE_HINT = "`gliomaseg prepare` makes such cases from exams named otherwise (T1CE.nii.gz, flair/, DICOM series)"


def expected_names(case_id: str) -> str:
    """The file names a case folder must hold."""
    return f"{case_id}-{{{','.join(MODALITIES)}}}{NIFTI_SUFFIX} (and {case_id}-{SEG_SUFFIX}{NIFTI_SUFFIX} to train)"


def _looks_like_case(folder: Path) -> bool:
    return any(p.name.startswith(folder.name + "-") and p.name.endswith(NIFTI_SUFFIX) for p in folder.iterdir())


def find_case_folders(data_dir: Path | str) -> list[Path]:
    """Case folders under ``data_dir`` (or ``data_dir`` itself if it is one), sorted by name."""
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise InputError(data_dir, "folder does not exist")
    if not data_dir.is_dir():
        raise InputError(data_dir, "is a file, expected a folder of cases")
    if _looks_like_case(data_dir):
        return [data_dir]
    folders = sorted(p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        loose = [p.name for p in data_dir.iterdir() if p.name.endswith((NIFTI_SUFFIX, ".nii"))]
        if loose:
            raise InputError(data_dir, f"holds {len(loose)} NIfTI file(s) ({', '.join(sorted(loose)[:4])}) but no case: expected "
                                       f"{expected_names(data_dir.name)}, or one such folder per case; {PREPARE_HINT}")
        raise InputError(data_dir, "folder contains no case folders")
    return folders


def discover_cases(data_dir: Path | str, require_seg: bool = False) -> list[Case]:
    """All cases under ``data_dir``; the first bad folder raises InputError."""
    return [read_case_folder(folder, require_seg) for folder in find_case_folders(data_dir)]


def _check_same_grid(reference: Volume, other: Volume) -> None:
    if other.data.shape != reference.data.shape:
        raise InputError(
            other.path, f"shape {other.data.shape} differs from {reference.path.name} {reference.data.shape}"
        )
    if not np.allclose(other.affine, reference.affine, atol=1e-3):
        raise InputError(other.path, f"affine differs from {reference.path.name}")


def load_case(case: Case, with_label: bool = True, label_scheme: str = DEFAULT_LABEL_SCHEME) -> LoadedCase:
    """Load and cross-check all of a case's volumes (same shape and affine, finite, 3D);
    the label map is read in ``label_scheme`` and held as 2024 labels."""
    volumes = {m: load_image(path) for m, path in case.images.items()}
    # t1c is what BraTS registers the other sequences to: results are placed (and headed) like it.
    reference = volumes.get(REFERENCE_MODALITY) or next(iter(volumes.values()))
    for volume in volumes.values():
        _check_same_grid(reference, volume)
    label = None
    if with_label and case.seg is not None:
        seg = load_label_map(case.seg, label_scheme)
        _check_same_grid(reference, seg)
        label = seg.data
    # A missing sequence is zeros: after normalisation, what modality dropout trained the model on.
    image = np.zeros((len(MODALITIES), *reference.data.shape), np.float32)
    for channel, modality in enumerate(MODALITIES):
        if modality in volumes:
            image[channel] = volumes[modality].data
    return LoadedCase(case.case_id, image, label, reference.affine, reference.spacing, reference.space, case.missing)
