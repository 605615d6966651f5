"""Load and save NIfTI volumes with the checks a BraTS pipeline needs.

Every failure becomes an :class:`InputError` naming the file, so a batch job can
report "this file, this problem" instead of a traceback.
"""

from __future__ import annotations

import gzip
import io
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from gliomaseg.errors import InputError
from gliomaseg.io.atomic import atomic_path
from gliomaseg.labels import DEFAULT_LABEL_SCHEME, LABEL_SCHEMES

NIFTI_SUFFIX = ".nii.gz"
"""How gliomaseg names every NIfTI file it reads in a case folder or writes."""

# ISA-L's gzip decodes the same streams about twice as fast as zlib (benchmarks/bench_predict.py); the NIfTI
# bytes are identical, so it is used when installed (requirements.txt pins it) and zlib otherwise.
try:
    from isal import igzip as fast_gzip
    from isal.igzip_lib import IsalError as _FastGzipError
except ImportError:  # pragma: no cover - isal is a pinned dependency; this keeps a bare install working
    fast_gzip, _FastGzipError = None, zlib.error


def spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm: the column norms of the affine, in float32 as NIfTI headers store them."""
    return tuple(float(s) for s in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0)).astype(np.float32))


@dataclass(frozen=True)
class HeaderSpace:
    """A NIfTI header's qform and sform with their codes.

    Readers disagree on which matrix to trust (several viewers and older tools prefer the qform),
    so a label map placed exactly like its reference image must carry both, codes included; the
    affine alone would be written with nibabel's defaults (qform_code 0, sform_code 2)."""

    qform: np.ndarray
    qform_code: int
    sform: np.ndarray
    sform_code: int

    @classmethod
    def of(cls, header: nib.Nifti1Header) -> HeaderSpace:
        return cls(header.get_qform(), int(header["qform_code"]), header.get_sform(), int(header["sform_code"]))

    def write_into(self, header: nib.Nifti1Header) -> None:
        header.set_qform(self.qform, self.qform_code)
        header.set_sform(self.sform, self.sform_code)

    def to_dict(self) -> dict:
        return {"qform": self.qform.tolist(), "qform_code": self.qform_code, "sform": self.sform.tolist(), "sform_code": self.sform_code}

    @classmethod
    def from_dict(cls, data: dict) -> HeaderSpace:
        return cls(np.asarray(data["qform"]), int(data["qform_code"]), np.asarray(data["sform"]), int(data["sform_code"]))


@dataclass(frozen=True)
class Volume:
    """A 3D image and where it sits in the world.

    ``data`` is (X, Y, Z) in the file's voxel order; ``affine`` is the 4x4 voxel-to-world matrix;
    ``space`` the header's own matrices and codes, for writing results placed like this file.
    """

    data: np.ndarray
    affine: np.ndarray
    path: Path
    space: HeaderSpace | None = None

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm, from the affine (as the official BraTS metrics read it)."""
        return spacing_from_affine(self.affine)


def _load(path: Path) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Header | nib.Nifti2Header]:
    """(voxels, scaled as nibabel scales them; affine; header) of a NIfTI file.

    A .nii.gz NIfTI-1 is decoded in memory by ISA-L and, unless its header asks for intensity
    scaling, its voxels are a read-only view of the decoded bytes: nibabel's own route copies them
    once more through a file object (4 ms against 0.2 ms for a 240x240x155 uint8 label map, of a
    ~40 ms scoring of a pair). Anything else goes through nibabel's own opener."""
    if fast_gzip is not None and path.name.endswith(".gz"):
        raw = fast_gzip.decompress(path.read_bytes())
        if raw[344:348] == b"n+1\0":  # a single-file NIfTI-1 (NIfTI-2, or not NIfTI at all: nibabel decides)
            header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw))
            if header.get_slope_inter() in {(None, None), (1.0, 0.0)}:  # nibabel applies neither
                shape = header.get_data_shape()
                data = np.frombuffer(raw, header.get_data_dtype(), int(np.prod(shape)), int(header["vox_offset"]))
                return data.reshape(shape, order="F"), header.get_best_affine(), header
            image = nib.Nifti1Image.from_bytes(raw)
            return np.asanyarray(image.dataobj), image.affine, image.header
    image = nib.load(str(path))
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(path, f"not a NIfTI image (read as {type(image).__name__})")
    return np.asanyarray(image.dataobj), image.affine, image.header


def _read(path: Path) -> tuple[np.ndarray, np.ndarray, HeaderSpace]:
    """(voxel array as stored, possibly read-only; affine; header space) of a 3D NIfTI file; a trailing
    4th axis of 1 is dropped."""
    if not path.exists():
        raise InputError(path, "file does not exist")
    if path.is_dir():
        raise InputError(path, "is a folder, expected a .nii.gz file")
    try:
        data, affine, header = _load(path)
    except gzip.BadGzipFile:
        raise InputError(path, "not a gzip file, although named .gz") from None
    except (zlib.error, _FastGzipError, EOFError) as err:
        raise InputError(path, f"corrupt or truncated gzip ({err})") from None
    except (nib.filebasedimages.ImageFileError, nib.spatialimages.HeaderDataError, ValueError, OSError) as err:
        raise InputError(path, f"not a readable NIfTI image ({err})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(path, f"expected a 3D image, got {data.ndim}D with shape {data.shape}")
    return data, affine, HeaderSpace.of(header)


def load_image(path: Path | str) -> Volume:
    """A 3D MR image, rejected when not 3D, NaN/inf or all zeros.

    ``data`` holds the voxels as stored (any numeric dtype, possibly a read-only view of the decoded
    file): callers cast them where they need float32, once (``load_case`` casts straight into its
    stack of sequences, where a float32 copy per file and then the stack cost ~0.1 s per case)."""
    path = Path(path)
    data, affine, space = _read(path)
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise InputError(path, f"contains {int((~np.isfinite(data)).sum())} NaN or infinite voxels")
    if not data.any():
        raise InputError(path, "image is all zeros")
    return Volume(data, affine, path, space)


def _values_outside(raw: np.ndarray, allowed: dict[int, int]) -> list[float]:
    """The values of ``raw`` that are not keys of ``allowed``, sorted.

    Label maps hold a handful of small values: min/max and one comparison per value
    in between cost a few ms where np.unique's sort of ~9 M voxels costs ~60 ms.
    """
    low, high = raw.min(), raw.max()
    if np.isfinite(low) and np.isfinite(high) and high - low < 256 and float(low) == int(low):
        between = [v for v in range(int(low), int(high) + 1) if v not in allowed]
        if not any((raw == v).any() for v in between):
            return []
    return [v for v in np.unique(raw).tolist() if v not in allowed]


def load_label_map(path: Path | str, scheme: str = DEFAULT_LABEL_SCHEME) -> Volume:
    """A 3D uint8 map of 2024 labels (0..4), read from a file written in ``scheme`` (LABEL_SCHEMES).

    Float files are accepted when every value is a whole number (some tools save
    segmentations as float32); fractional values and values the scheme does not have are rejected.
    """
    path = Path(path)
    mapping = LABEL_SCHEMES[scheme]
    raw, affine, space = _read(path)
    if not np.issubdtype(raw.dtype, np.integer):
        if not np.isfinite(raw).all() or not np.array_equal(raw, np.round(raw)):
            raise InputError(path, f"label map has non-integer values (dtype {raw.dtype})")
    unknown = _values_outside(raw, mapping)
    if unknown:
        shown = ", ".join(str(int(v)) for v in unknown[:5])
        allowed = "0..4" if scheme == DEFAULT_LABEL_SCHEME else f"the {scheme} scheme ({', '.join(map(str, mapping))})"
        raise InputError(path, f"label map has values outside {allowed}: {shown}")
    data = raw.astype(np.uint8)
    if any(k != v for k, v in mapping.items()):
        lookup = np.zeros(256, np.uint8)
        lookup[list(mapping)] = list(mapping.values())
        data = lookup[data]
    return Volume(data, affine, path, space)


def save_label_map(data: np.ndarray, affine: np.ndarray, path: Path | str, space: HeaderSpace | None = None) -> Path:
    """Write a uint8 label map atomically (temporary file, then rename); with ``space`` (the
    reference image's), its qform, sform and codes are the reference's."""
    image = nib.Nifti1Image(np.asarray(data, dtype=np.uint8), affine)
    if space is not None:
        space.write_into(image.header)
    image.set_data_dtype(np.uint8)
    image.header.set_xyzt_units("mm", "sec")
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))
    return Path(path)


def save_image(data: np.ndarray, affine: np.ndarray, path: Path | str) -> Path:
    """Write a float32 image atomically."""
    image = nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine)
    image.header.set_xyzt_units("mm", "sec")
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))
    return Path(path)
