"""Raw "clinical" exams made from a BraTS-layout case, with known rigid motion (needs the prepare extra).

For checking ``gliomaseg prepare`` (tests, ``benchmarks/bench_prepare.py``) against a known answer.

t1c keeps its grid; t1n, t2w and t2f are each moved by a known rigid transform (rotations of
10-15 degrees, shifts of 10-14 mm), resampled onto anisotropic voxels (0.9 x 0.9 x 4 mm, as a
clinical 2D FLAIR) and written in another axis order than the source: what ``prepare`` must undo.
Each moved sequence also gets its brain mask carried with it (nearest neighbour), to score the
co-registration by brain-mask Dice on the t1c grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from gliomaseg.io.nifti import NIFTI_SUFFIX
from gliomaseg.preparation.registration import matrix_transform, transform_matrix

# (rotation about x, y, z in degrees; shift in mm; orientation written) per moved sequence
MOTIONS = {
    "t1n": ((10.0, -4.0, 3.0), (10.0, -6.0, 4.0), "LPS"),
    "t2w": ((-3.0, 11.0, -5.0), (-8.0, 10.0, 5.0), "RAS"),
    "t2f": ((12.0, 5.0, -3.0), (10.0, -8.0, 6.0), "LPS"),
}
ANISOTROPIC_SPACING = (0.9, 0.9, 4.0)


def motion_matrix(rotation_deg: tuple[float, float, float], shift_mm: tuple[float, float, float], centre: np.ndarray) -> np.ndarray:
    """The rigid 4x4 matrix (t1c point -> moved sequence point) about ``centre``."""
    transform = sitk.Euler3DTransform()
    transform.SetCenter(centre.tolist())
    transform.SetRotation(*np.radians(rotation_deg).tolist())
    transform.SetTranslation(shift_mm)
    return transform_matrix(transform)


def _moved_grid(image: sitk.Image, spacing: tuple[float, float, float]) -> sitk.Image:
    size = [int(np.ceil(n * s / t)) for n, s, t in zip(image.GetSize(), image.GetSpacing(), spacing)]
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing(spacing)
    grid.SetDirection(image.GetDirection())
    grid.SetOrigin(image.GetOrigin())
    return grid


def write_moved_exam(case_dir: Path, exam_dir: Path) -> dict[str, tuple[np.ndarray, sitk.Image]]:
    """Write ``exam_dir`` with ``T1CE.nii.gz``, ``t1_native.nii.gz``, ``T2.nii.gz`` and ``FLAIR.nii.gz``;
    return each moved sequence's true t1c -> sequence matrix and its brain mask on its own grid."""
    exam_dir.mkdir(parents=True)
    case = case_dir.name
    t1c = sitk.ReadImage(str(case_dir / f"{case}-t1c{NIFTI_SUFFIX}"), sitk.sitkFloat32)
    sitk.WriteImage(t1c, str(exam_dir / f"T1CE{NIFTI_SUFFIX}"))
    centre = np.asarray(t1c.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in t1c.GetSize()]))
    names = {"t1n": "t1_native", "t2w": "T2", "t2f": "FLAIR"}
    truths = {}
    for modality, (rotation, shift, orientation) in MOTIONS.items():
        source = sitk.ReadImage(str(case_dir / f"{case}-{modality}{NIFTI_SUFFIX}"), sitk.sitkFloat32)
        truth = motion_matrix(rotation, shift, centre)
        # Resampling needs moved point -> source point: the inverse of the motion.
        inverse = matrix_transform(np.linalg.inv(truth))
        grid = _moved_grid(source, ANISOTROPIC_SPACING)
        moved = sitk.Resample(source, grid, inverse, sitk.sitkLinear, 0.0)
        mask = sitk.Resample(sitk.Cast(source > 0, sitk.sitkUInt8), grid, inverse, sitk.sitkNearestNeighbor, 0)
        sitk.WriteImage(sitk.DICOMOrient(moved, orientation), str(exam_dir / f"{names[modality]}{NIFTI_SUFFIX}"))
        truths[modality] = (truth, mask)
    return truths
