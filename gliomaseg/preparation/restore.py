"""A segmentation on a prepared case's atlas grid, back on the patient's original t1c.

The inverse of the atlas registration takes each voxel of the original t1c grid to the atlas
grid, where the label is read by nearest neighbour. The result has the original file's voxel
grid, affine and (for NIfTI sources) its qform/sform codes, so it overlays the scan in any viewer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gliomaseg.errors import InputError
from gliomaseg.io.nifti import NIFTI_SUFFIX, HeaderSpace, load_label_map, save_label_map
from gliomaseg.preparation.prepare import PREPARE_JSON
from gliomaseg.preparation.raw_images import Grid, require


@dataclass(frozen=True)
class OriginalScan:
    """What a prepared case records of the patient's scan: the original t1c's grid and NIfTI
    header (None for DICOM sources), the transform from atlas points to t1c points, and where the
    t1c came from (a NIfTI file or a DICOM series folder)."""

    grid: Grid
    space: HeaderSpace | None
    atlas_to_t1c: np.ndarray
    t1c_source: Path | None = None

    @property
    def dicom_folder(self) -> Path | None:
        """The original t1c's DICOM series folder, if it came as DICOM (a NIfTI source is a file)."""
        source = self.t1c_source
        return source if source is not None and not source.name.endswith((".nii", NIFTI_SUFFIX)) else None


def read_original_scan(prepared_case: Path | str) -> OriginalScan:
    """The original scan recorded in a prepared case's ``prepare.json``; InputError when it is absent or unreadable."""
    path = Path(prepared_case) / PREPARE_JSON
    if not path.is_file():
        raise InputError(path, "not a prepared case (no prepare.json): only cases made by gliomaseg prepare can go back to the native scan")
    try:
        record = json.loads(path.read_text())
        header = record["native_t1c"].get("header")
        source = record.get("sources", {}).get("t1c")
        return OriginalScan(Grid.from_dict(record["native_t1c"]["grid"]), HeaderSpace.from_dict(header) if header else None,
                            np.asarray(record["transforms"]["atlas_to_t1c"], float), Path(source) if source else None)
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(path, f"unreadable prepare record ({err})") from None


def onto_original_grid(labels: np.ndarray, affine: np.ndarray, scan: OriginalScan) -> np.ndarray:
    """An atlas-grid label map (X, Y, Z, as nibabel reads it, with its affine) on the original t1c grid, (X, Y, Z)."""
    require("SimpleITK")
    import SimpleITK as sitk

    from gliomaseg.preparation.registration import resample_onto

    image = Grid.from_affine(affine, labels.shape).place(sitk.GetImageFromArray(np.ascontiguousarray(labels.astype(np.uint8).transpose(2, 1, 0))))
    native = resample_onto(image, scan.grid.empty_image(), np.linalg.inv(scan.atlas_to_t1c), labels=True)
    return sitk.GetArrayFromImage(native).transpose(2, 1, 0)


def save_on_original_grid(labels: np.ndarray, affine: np.ndarray, scan: OriginalScan, out_path: Path | str) -> Path:
    """Write an atlas-grid label map onto the original t1c grid, with its affine and header codes, atomically."""
    return save_label_map(onto_original_grid(labels, affine, scan), scan.grid.affine, out_path, scan.space)


def restore(labels_path: Path | str, prepared_case: Path | str, out_path: Path | str) -> Path:
    """Write the label map ``labels_path`` (on ``prepared_case``'s atlas grid) onto the original t1c's grid at ``out_path``."""
    scan = read_original_scan(prepared_case)
    labels = load_label_map(labels_path)
    return save_on_original_grid(labels.data, labels.affine, scan, out_path)
