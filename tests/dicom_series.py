"""Write a 3D image as a DICOM MR series (one file per slice), as a scanner export would hold it."""

from __future__ import annotations

import locale
from pathlib import Path

import SimpleITK as sitk


def write_dicom_series(image: sitk.Image, folder: Path, spacing: tuple[float, float, float], orientation: str = "LPS") -> sitk.Image:
    """Resample ``image`` to ``spacing`` (same field of view), reorient it, write it as int16 DICOM
    slices in ``folder``; return the image written (its geometry is what a reader must find)."""
    size = [int(round(n * s / t)) for n, s, t in zip(image.GetSize(), image.GetSpacing(), spacing)]
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing(spacing)
    grid.SetDirection(image.GetDirection())
    grid.SetOrigin(image.GetOrigin())
    volume = sitk.Cast(sitk.DICOMOrient(sitk.Resample(image, grid, sitk.Transform(), sitk.sitkLinear, 0.0), orientation), sitk.sitkInt16)
    folder.mkdir(parents=True)
    direction = volume.GetDirection()
    series_uid = "1.2.826.0.1.3680043.2.1125.1.42"
    common = {
        "0008|0060": "MR",
        "0008|103e": folder.name,
        "0010|0010": "Test^Phantom",
        "0010|0020": "TEST0001",
        "0020|000d": "1.2.826.0.1.3680043.2.1125.1.41",
        "0020|000e": series_uid,
        "0020|0011": "7",
        "0020|0052": "1.2.826.0.1.3680043.2.1125.1.43",
        "0008|0020": "20260101",
        "0008|0021": "20260101",
        "0008|0030": "120000",
        "0008|0031": "120000",
        "0020|0037": "\\".join(f"{v:.6f}" for v in (direction[0], direction[3], direction[6], direction[1], direction[4], direction[7])),
        "0018|0050": f"{spacing[2]:.4f}",
        "0018|0088": f"{spacing[2]:.4f}",
    }
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    # GDCM's writer switches the process to the C locale and leaves it there.
    previous = locale.setlocale(locale.LC_ALL)
    try:
        _write_slices(volume, folder, writer, common, series_uid)
    finally:
        locale.setlocale(locale.LC_ALL, previous)
    return volume


def _write_slices(volume: sitk.Image, folder: Path, writer: sitk.ImageFileWriter, common: dict[str, str], series_uid: str) -> None:
    for k in range(volume.GetDepth()):
        slice_ = volume[:, :, k]
        for tag, value in common.items():
            slice_.SetMetaData(tag, value)
        slice_.SetMetaData("0008|0018", f"{series_uid}.{k + 1}")
        slice_.SetMetaData("0020|0013", str(k + 1))
        slice_.SetMetaData("0020|0032", "\\".join(f"{v:.6f}" for v in volume.TransformIndexToPhysicalPoint((0, 0, k))))
        writer.SetFileName(str(folder / f"IM{k + 1:04d}.dcm"))
        writer.Execute(slice_)
