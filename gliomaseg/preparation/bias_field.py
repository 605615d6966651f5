"""N4 bias-field correction (Tustison et al. 2010), SimpleITK's implementation."""

from __future__ import annotations

import SimpleITK as sitk

SHRINK = 4
"""The field is smooth: fitting it on a 4x shrunken image costs a fraction of the time and is applied at full resolution."""


def correct_bias_field(image: sitk.Image) -> sitk.Image:
    """``image`` divided by the N4 bias field fitted inside its Otsu foreground."""
    shrunk = sitk.Shrink(image, [SHRINK] * 3)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.Execute(shrunk, sitk.OtsuThreshold(shrunk, 0, 1))
    return image / sitk.Exp(corrector.GetLogBiasFieldAsImage(image))
