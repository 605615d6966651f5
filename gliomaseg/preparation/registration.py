"""Rigid registration with SimpleITK, and transforms as 4x4 matrices.

Convention (SimpleITK's): registering ``moving`` to ``fixed`` gives the transform that maps a
point of the fixed image's space to the moving image's (LPS, mm), which is what resampling the
moving image onto the fixed grid needs. Transforms are kept as 4x4 matrices so that they compose
by multiplication (every sequence is resampled once, from its own voxels to the atlas grid), are
inverted exactly (segmentations back onto the patient's scan) and are written to ``prepare.json``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

MAX_ROTATION_DEG = 60.0
"""A co-registration (or atlas registration) that rotates a head further than this has failed:
patients move a few degrees between series and lie roughly aligned with the scanner axes."""

MIN_MUTUAL_INFORMATION = 0.1
"""Below this final Mattes mutual information a registration is reported as failed. Measured on
a bundled case: co-registered sequences of one head 0.43-0.55, t1c's brain on the MNI152
template 0.23, smoothed noise 0.001-0.004. (Another patient's FLAIR gives 0.30: this check
catches an unrelated image, not a wrong patient.)"""


@dataclass(frozen=True)
class Registration:
    """A rigid transform (fixed -> moving, 4x4, LPS mm) and how well the images agree under it."""

    matrix: np.ndarray
    mutual_information: float

    @property
    def rotation_deg(self) -> float:
        cos = (np.trace(self.matrix[:3, :3]) - 1) / 2
        return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))

    @property
    def translation_mm(self) -> float:
        return float(np.linalg.norm(self.matrix[:3, 3]))

    def failure(self) -> str | None:
        """Why this registration cannot be trusted, or None."""
        if self.mutual_information < MIN_MUTUAL_INFORMATION:
            return f"the images do not match (mutual information {self.mutual_information:.3f} < {MIN_MUTUAL_INFORMATION})"
        if self.rotation_deg > MAX_ROTATION_DEG:
            return f"implausible rotation of {self.rotation_deg:.0f} degrees"
        return None


def transform_matrix(transform: sitk.Transform) -> np.ndarray:
    """The 4x4 matrix of a SimpleITK matrix-offset transform (Euler, affine...): x -> A (x - c) + t + c."""
    a = np.asarray(transform.GetMatrix(), float).reshape(3, 3)
    centre = np.asarray(transform.GetCenter(), float)
    matrix = np.eye(4)
    matrix[:3, :3] = a
    matrix[:3, 3] = np.asarray(transform.GetTranslation(), float) + centre - a @ centre
    return matrix


def matrix_transform(matrix: np.ndarray) -> sitk.AffineTransform:
    """The SimpleITK transform of a 4x4 matrix."""
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(np.asarray(matrix)[:3, :3].ravel().tolist())
    transform.SetTranslation(np.asarray(matrix)[:3, 3].tolist())
    return transform


ITERATIONS = 100
MIN_STEP = 1e-3
"""Per resolution, the optimiser stops after ITERATIONS steps or when its step falls below MIN_STEP (mm or
radian-equivalent). Measured on a bundled exam's three moved sequences (benchmarks/bench_prepare.py): 300
steps down to 1e-4 took 33.5 s with errors of 0.38-0.50 mm mean, 0.66-1.00 max against the true transform;
this, with 2.5 % sampling, 10.2 s and 0.40-0.46 mean, 0.73-0.97 max: the extra steps polished nothing a
1 mm grid resolves between sequences of one head. (The atlas registration keeps 300 steps: prepare.ATLAS_ITERATIONS.)"""

COREGISTRATION_SAMPLING = 0.025
"""Fraction of t1c's voxels the co-registration metric samples (5 % before: twice the time, the same accuracy)."""


def _method(sampling: float, seed: int, iterations: int, min_step: float) -> sitk.ImageRegistrationMethod:
    """Mattes mutual information (different contrasts), 3 resolutions, a random ``sampling`` fraction of the voxels."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(sampling, seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=min_step, numberOfIterations=iterations,
                                                    relaxationFactor=0.5, gradientMagnitudeTolerance=1e-8)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return method


def register_rigid(fixed: sitk.Image, moving: sitk.Image, sampling: float = COREGISTRATION_SAMPLING, seed: int = 1,
                   iterations: int = ITERATIONS, min_step: float = MIN_STEP) -> Registration:
    """The rigid transform that aligns ``moving`` to ``fixed``, started from their centres of mass
    (so a shift of centimetres is found before the rotation is refined). The time is about
    proportional to ``sampling``, the fraction of ``fixed``'s voxels the metric is computed on,
    drawn at random from ``seed``: a fixed seed makes a re-run give the same transform (SimpleITK
    reads 0 as "seed from the clock")."""
    if seed == sitk.sitkWallClock:
        raise ValueError("seed 0 means a new random sample each run in SimpleITK; give a positive seed")
    initial = sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform(),
                                                sitk.CenteredTransformInitializerFilter.MOMENTS)
    method = _method(sampling, seed, iterations, min_step)
    method.SetInitialTransform(initial, inPlace=True)
    method.Execute(fixed, moving)
    # The optimiser's last value comes from a random sample; score the result on every voxel.
    check = sitk.ImageRegistrationMethod()
    check.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    check.SetInterpolator(sitk.sitkLinear)
    check.SetInitialTransform(initial)
    return Registration(transform_matrix(initial), -float(check.MetricEvaluate(fixed, moving)))


def resample_onto(image: sitk.Image, grid: sitk.Image, matrix: np.ndarray, labels: bool = False) -> sitk.Image:
    """``image`` on ``grid``'s voxels through ``matrix`` (grid space -> image space); linear, or nearest for labels."""
    interpolator = sitk.sitkNearestNeighbor if labels else sitk.sitkLinear
    return sitk.Resample(image, grid, matrix_transform(matrix), interpolator, 0.0, image.GetPixelID())
