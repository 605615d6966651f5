"""A segmentation on a prepared case's atlas grid, back on the patient's original t1c.

The inverse of the atlas registration takes each voxel of the original t1c grid to the atlas
grid, where the label is read by nearest neighbour. The result has the original file's voxel
grid, affine and (for NIfTI sources) its qform/sform codes, so it overlays the scan in any viewer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gliomaseg.errors import InputError
from gliomaseg.io.nifti import HeaderSpace, load_label_map, save_label_map
from gliomaseg.preparation.prepare import PREPARE_JSON
from gliomaseg.preparation.raw_images import Grid, require


def read_prepare_record(prepared_case: Path) -> dict:
    """``prepare.json`` of a prepared case folder; InputError when it is absent or unreadable."""
    path = Path(prepared_case) / PREPARE_JSON
    if not path.is_file():
        raise InputError(path, "not a prepared case (no prepare.json): only cases made by gliomaseg prepare can go back to the native scan")
    try:
        record = json.loads(path.read_text())
        record["native_t1c"]["grid"], record["transforms"]["atlas_to_t1c"]
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(path, f"unreadable prepare record ({err})") from None
    return record


def onto_original_grid(labels: np.ndarray, affine: np.ndarray, record: dict) -> tuple[np.ndarray, np.ndarray, HeaderSpace | None]:
    """``(labels, affine, header space)`` of an atlas-grid label map (X, Y, Z, as nibabel reads
    it, with its affine) moved onto the original t1c grid."""
    require("SimpleITK")
    import SimpleITK as sitk

    from gliomaseg.preparation.registration import resample_onto

    # nibabel's RAS affine -> SimpleITK's LPS geometry, for the label map as it lies on disk
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(labels.astype(np.uint8).transpose(2, 1, 0)))
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    image.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    grid = Grid.from_dict(record["native_t1c"]["grid"])
    to_atlas = np.linalg.inv(np.asarray(record["transforms"]["atlas_to_t1c"], float))
    native = resample_onto(image, grid.empty_image(), to_atlas, labels=True)
    data = sitk.GetArrayFromImage(native).transpose(2, 1, 0)
    header = record["native_t1c"].get("header")
    space = HeaderSpace.from_dict(header) if header else None
    return data, _ras_affine(grid), space


def _ras_affine(grid: Grid) -> np.ndarray:
    """The NIfTI (RAS) affine of a SimpleITK (LPS) grid."""
    direction = np.asarray(grid.direction).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(grid.spacing)
    affine[:3, 3] = grid.origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


def restore(labels_path: Path | str, prepared_case: Path | str, out_path: Path | str) -> Path:
    """Write the label map ``labels_path`` (on ``prepared_case``'s atlas grid) onto the original t1c's grid at ``out_path``."""
    record = read_prepare_record(Path(prepared_case))
    labels = load_label_map(labels_path)
    data, affine, space = onto_original_grid(labels.data, labels.affine, record)
    return save_label_map(data, affine, out_path, space)
