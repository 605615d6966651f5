"""The grid prepared cases land on, and the brain template t1c is registered to.

The default is the BraTS 2024 post-treatment release's grid: MNI152 at 1 mm, 182 x 218 x 182,
the FSL ``MNI152_T1_1mm`` affine. The template registered to is the ICBM 2009a symmetric brain
(MNI space) that nilearn ships in its wheel, resampled onto that grid: both are MNI space, so
no registration is involved in that step. The template has no skull, so the brain is extracted
before the atlas registration (on the patient's t1c) and registration is brain to brain.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from gliomaseg.errors import InputError
from gliomaseg.preparation.raw_images import Grid, require

MNI152_GRID = Grid(size=(182, 218, 182), spacing=(1.0, 1.0, 1.0), origin=(-90.0, 126.0, -72.0), direction=(1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
"""FSL's MNI152 1 mm grid in SimpleITK's LPS terms: its NIfTI affine is diag(-1, 1, 1) with origin (90, -126, -72) RAS."""

NILEARN_TEMPLATE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
ATLAS_CHOICES = ("mni152",)


@dataclass(frozen=True)
class Atlas:
    """A named brain template on the output grid."""

    name: str
    template: sitk.Image

    @property
    def grid(self) -> Grid:
        return Grid.of(self.template)


def _nilearn_template() -> Path:
    """The template file inside the installed nilearn package (found without importing nilearn, which is slow)."""
    require("nilearn")
    spec = importlib.util.find_spec("nilearn")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / NILEARN_TEMPLATE
    if not path.is_file():
        raise InputError(path, "nilearn's MNI152 template is missing from the installed package")
    return path


def mni152() -> Atlas:
    """The ICBM 2009a brain on the BraTS 2024 (FSL MNI152) grid."""
    source = sitk.Cast(sitk.ReadImage(str(_nilearn_template())), sitk.sitkFloat32)
    template = sitk.Resample(source, MNI152_GRID.empty_image(sitk.sitkFloat32), sitk.Transform(), sitk.sitkLinear, 0.0)
    return Atlas("mni152", template)


def atlas_from_file(path: Path) -> Atlas:
    """A user's template (a skull-stripped T1-weighted brain): its own grid is the output grid."""
    try:
        template = sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkFloat32)
    except RuntimeError:
        raise InputError(path, "atlas is not a readable image") from None
    if template.GetDimension() != 3:
        raise InputError(path, f"atlas must be a 3D image, got {template.GetDimension()}D")
    if not np.asarray(sitk.GetArrayViewFromImage(template)).any():
        raise InputError(path, "atlas image is all zeros")
    return Atlas(str(path), template)


def load_atlas(spec: str | Path) -> Atlas:
    """``mni152`` (default) or the path of a template file."""
    if str(spec) == "mni152":
        return mni152()
    path = Path(spec)
    if not path.is_file():
        raise InputError(path, f"atlas is neither {', '.join(ATLAS_CHOICES)} nor an existing file")
    return atlas_from_file(path)
