"""Reading a raw sequence (NIfTI file or DICOM series folder) as a SimpleITK image.

DICOM goes through dcm2niix (the converter the field trusts with vendor quirks: scaling, gantry
tilt, mosaics), run on one series folder into a temporary folder. Images keep their own voxel
grid; only the axis order and signs change (``DICOMOrient``), so nothing is interpolated before
the one resampling onto the atlas grid.
"""

from __future__ import annotations

import importlib.util
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gliomaseg.errors import InputError, extra_install_hint

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # its own inverse: also LPS -> RAS
EXTRA_HINT = extra_install_hint("prepare")


def require(module: str) -> None:
    """One line for users without the extra, instead of an import error deep inside."""
    if importlib.util.find_spec(module) is None:
        raise InputError(Path(module), f"not installed; {EXTRA_HINT}")


@dataclass(frozen=True)
class Grid:
    """Where an image's voxels sit, in SimpleITK's (LPS) terms: enough to rebuild an empty image on it."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image) -> Grid:
        return cls(tuple(int(s) for s in image.GetSize()), tuple(image.GetSpacing()), tuple(image.GetOrigin()),
                   tuple(image.GetDirection()))

    @classmethod
    def from_affine(cls, affine: np.ndarray, shape: tuple[int, int, int]) -> Grid:
        """The grid of a NIfTI volume as nibabel reads it: (X, Y, Z) voxels and a RAS affine."""
        lps = _RAS_TO_LPS @ np.asarray(affine, float)
        spacing = np.linalg.norm(lps[:3, :3], axis=0)
        return cls(tuple(int(n) for n in shape), tuple(spacing.tolist()), tuple(lps[:3, 3].tolist()),
                   tuple((lps[:3, :3] / spacing).ravel().tolist()))

    @property
    def affine(self) -> np.ndarray:
        """The NIfTI (RAS) affine of this grid."""
        lps = np.eye(4)
        lps[:3, :3] = np.asarray(self.direction).reshape(3, 3) * np.asarray(self.spacing)
        lps[:3, 3] = self.origin
        return _RAS_TO_LPS @ lps

    def place(self, image):
        """``image`` (of this grid's size) given this grid's spacing, origin and direction."""
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def empty_image(self, pixel_id: int | None = None):
        import SimpleITK as sitk

        return self.place(sitk.Image(list(self.size), sitk.sitkUInt8 if pixel_id is None else pixel_id))

    def to_dict(self) -> dict:
        return {"size": list(self.size), "spacing": list(self.spacing), "origin": list(self.origin), "direction": list(self.direction)}

    @classmethod
    def from_dict(cls, data: dict) -> Grid:
        return cls(tuple(data["size"]), tuple(data["spacing"]), tuple(data["origin"]), tuple(data["direction"]))


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def dicom_to_nifti(folder: Path, workdir: Path) -> Path:
    """The one NIfTI file dcm2niix makes of the DICOM series in ``folder`` (written in ``workdir``).

    Localisers and derived images are ignored (``-i y``), as clinical exports often hold them.
    Raises InputError for a folder with no DICOM series or with several.
    """
    require("dcm2niix")
    import dcm2niix

    out = Path(tempfile.mkdtemp(prefix="dcm2niix-", dir=workdir))
    result = dcm2niix.main(["-z", "n", "-b", "n", "-i", "y", "-f", "series_%s_%e", "-o", str(out), str(folder)],
                           capture_output=True, text=True)
    produced = sorted(out.glob("*.nii"))
    if not produced:
        raise InputError(folder, f"no DICOM series in this folder (dcm2niix: {_last_line(result.stdout + result.stderr)})")
    if len(produced) > 1:
        raise InputError(folder, f"{len(produced)} DICOM series or echoes in this folder ({', '.join(p.name for p in produced)}); "
                                 "give the folder of one")
    return produced[0]


def read_sequence(path: Path, workdir: Path) -> tuple:
    """``(image, source_grid, nifti_path)`` for a NIfTI file or DICOM series folder.

    ``image`` is 3D float32 in LPS axis order (for registration); ``source_grid`` is the file's own
    grid, before reorientation (where a segmentation goes back to); ``nifti_path`` the file read
    (dcm2niix's output for DICOM). Raises InputError naming the file for unreadable files, 2D/4D
    images, constant images and NaN/inf.
    """
    require("SimpleITK")
    import SimpleITK as sitk

    nifti = dicom_to_nifti(path, workdir) if path.is_dir() else path
    try:
        image = sitk.ReadImage(str(nifti))
    except RuntimeError as err:
        raise InputError(path, f"not a readable image ({_last_line(str(err))})") from None
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3 or min(image.GetSize()) < 2:
        raise InputError(path, f"expected a 3D image, got size {'x'.join(map(str, image.GetSize()))}")
    image = sitk.Cast(image, sitk.sitkFloat32)
    values = sitk.GetArrayViewFromImage(image)
    if not np.isfinite(values).all():
        raise InputError(path, "contains NaN or infinite values")
    if values.min() == values.max():
        raise InputError(path, "image is constant")
    return sitk.DICOMOrient(image, "LPS"), Grid.of(image), nifti
