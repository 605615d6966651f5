"""DICOM Segmentation objects of a label map, on the patient's own DICOM series (highdicom).

A clinic's viewers (OHIF, 3D Slicer's DICOM module, PACS) read segmentations as DICOM SEG objects
that reference the images they were drawn on. The label map of ``predict --native`` lies on the grid
dcm2niix made of the original T1c series; each of that series' pixels is mapped to its voxel through
the instances' own positions and orientation (ImagePositionPatient, ImageOrientationPatient,
PixelSpacing), so frames are written in the source's slice and pixel order whatever axis order the
NIfTI file has. The SEG is BINARY (one bit per pixel and segment; the type every SEG reader supports),
one segment per label with SNOMED CT codes, frames only where a label is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gliomaseg import __version__
from gliomaseg.errors import InputError
from gliomaseg.io.atomic import atomic_path
from gliomaseg.labels import LABEL_COLOURS, LABELS

log = logging.getLogger("gliomaseg")
SEG_SUFFIX = ".seg.dcm"
ON_GRID_TOLERANCE = 0.01  # voxels: a source pixel must fall on a voxel centre of the label map
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])

# (SNOMED CT code, meaning) of each label's segmented property type; every segment's category is
# "Morphologically abnormal structure" (49755003), as dcmqi's and highdicom's examples code lesions.
ABNORMAL_STRUCTURE = ("49755003", "Morphologically Abnormal Structure")
SEGMENT_TYPES: dict[int, tuple[str, str, str]] = {
    1: ("6574001", "Necrosis", "non-enhancing tumour core"),
    2: ("79654002", "Edema", "surrounding FLAIR hyperintensity"),
    3: ("108369006", "Neoplasm", "enhancing tissue"),
    4: ("245849007", "Post-surgical anatomy", "resection cavity"),
}
"""Label -> (code, meaning, what the BraTS 2024 label is): NETC as necrosis and SNFH as oedema, as BraTS
segmentations in public DICOM collections code them; ET as the neoplasm; RC as post-surgical anatomy."""


@dataclass(frozen=True)
class SourceSeries:
    """The original series a SEG references: its instances in slice order and, per instance, the
    label-map voxel of every pixel (``voxels[k]``: (rows, columns, 3) integer indices, -1 outside the map)."""

    folder: Path
    datasets: list
    voxels: list[np.ndarray]

    @property
    def sop_instance_uids(self) -> list[str]:
        return [str(ds.SOPInstanceUID) for ds in self.datasets]


def seg_path(out_dir: Path, case_id: str) -> Path:
    """Where ``predict --native`` writes a DICOM-sourced exam's segmentation object."""
    return out_dir / f"{case_id}{SEG_SUFFIX}"


def _read_instances(folder: Path) -> list:
    import pydicom
    from pydicom.errors import InvalidDicomError

    datasets = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError):
            continue  # DICOMDIR indexes, notes and thumbnails live beside exported series
        if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds and "PixelSpacing" in ds:
            datasets.append(ds)
    return datasets


def _pixel_voxels(ds, to_voxel: np.ndarray, shape: tuple[int, int, int], where: Path) -> np.ndarray:
    """(rows, columns, 3) label-map voxel indices of an instance's pixels (-1 where outside the map)."""
    position = _LPS_TO_RAS @ np.asarray(ds.ImagePositionPatient, float)
    orientation = np.asarray(ds.ImageOrientationPatient, float)
    row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)
    along_row = to_voxel[:3, :3] @ (_LPS_TO_RAS @ orientation[:3]) * column_spacing  # next column
    along_column = to_voxel[:3, :3] @ (_LPS_TO_RAS @ orientation[3:]) * row_spacing  # next row
    origin = to_voxel[:3, :3] @ position + to_voxel[:3, 3]
    rows, columns = np.arange(int(ds.Rows)), np.arange(int(ds.Columns))
    exact = origin + rows[:, None, None] * along_column + columns[None, :, None] * along_row
    voxels = np.rint(exact)
    if np.abs(exact - voxels).max() > ON_GRID_TOLERANCE:
        raise InputError(where, "the DICOM series does not lie on the label map's grid (gantry tilt or a resampled "
                                "series?): no DICOM SEG can reference it; use --no-dicom-seg")
    voxels = voxels.astype(np.int64)
    outside = ((voxels < 0) | (voxels >= np.asarray(shape))).any(axis=-1)
    voxels[outside] = -1
    return voxels


def source_series(folder: Path | str, affine: np.ndarray, shape: tuple[int, int, int]) -> SourceSeries:
    """The series in ``folder`` that a label map of ``shape`` and ``affine`` (its native grid) was made from."""
    require_dicom_extra()
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "the exam's DICOM series is no longer there (moved or deleted?); use --no-dicom-seg")
    by_series: dict[str, list] = {}
    for ds in _read_instances(folder):
        by_series.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
    candidates = [s for s in by_series.values() if sorted((len(s), int(s[0].Rows), int(s[0].Columns))) == sorted(shape)]
    if len(candidates) != 1:
        raise InputError(folder, f"{len(by_series)} DICOM series here, {len(candidates)} of the label map's size {shape}: "
                                 "cannot tell which one it was made from; use --no-dicom-seg")
    datasets = candidates[0]
    normal = np.cross(*np.asarray(datasets[0].ImageOrientationPatient, float).reshape(2, 3))
    datasets.sort(key=lambda ds: float(np.asarray(ds.ImagePositionPatient, float) @ normal))
    to_voxel = np.linalg.inv(np.asarray(affine, float))
    voxels = [_pixel_voxels(ds, to_voxel, shape, folder) for ds in datasets]
    return SourceSeries(folder, datasets, voxels)


def frames_of(labels: np.ndarray, series: SourceSeries) -> np.ndarray:
    """(instances, rows, columns) uint8 labels in the source series' own slice and pixel order."""
    frames = []
    for voxels in series.voxels:
        inside = voxels[..., 0] >= 0
        frame = np.zeros(voxels.shape[:2], np.uint8)
        frame[inside] = labels[tuple(voxels[inside].T)]
        frames.append(frame)
    return np.stack(frames)


def _segment_descriptions(model_name: str, present: list[int]):
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    algorithm = hd.AlgorithmIdentificationSequence(name=f"gliomaseg {model_name}", version=__version__,
                                                    family=codes.cid7162.ArtificialIntelligence)
    category = Code(ABNORMAL_STRUCTURE[0], "SCT", ABNORMAL_STRUCTURE[1])
    return [hd.seg.SegmentDescription(
        segment_number=number, segment_label=f"{LABELS[label]} ({SEGMENT_TYPES[label][2]})", segmented_property_category=category,
        segmented_property_type=Code(SEGMENT_TYPES[label][0], "SCT", SEGMENT_TYPES[label][1]),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
        display_color=hd.color.CIELabColor.from_rgb(*(round(255 * c) for c in LABEL_COLOURS[label])),
    ) for number, label in enumerate(present, start=1)]


def write_dicom_seg(labels: np.ndarray, series: SourceSeries, out_path: Path | str, model_name: str) -> Path | None:
    """Write the label map (on the series' native grid) as a DICOM SEG referencing ``series``, atomically.

    Segments are numbered 1.. in label order over the labels present (a viewer lists only what was found);
    an empty label map has nothing to encode: no file is written, which is logged, and None returned."""
    import highdicom as hd

    frames = frames_of(labels, series)
    present = [label for label in sorted(SEGMENT_TYPES) if (frames == label).any()]
    if not present:
        log.info("%s: no labels found, so no DICOM SEG written", Path(out_path).name)
        return None
    segment_of = np.zeros(max(SEGMENT_TYPES) + 1, np.uint8)
    segment_of[present] = np.arange(1, len(present) + 1)
    source = series.datasets[0]
    seg = hd.seg.Segmentation(
        source_images=series.datasets, pixel_array=segment_of[frames], segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_segment_descriptions(model_name, present), series_instance_uid=hd.UID(),
        series_number=int(getattr(source, "SeriesNumber", 0) or 0) + 1000, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="gliomaseg", manufacturer_model_name=model_name, software_versions=__version__, device_serial_number="none",
        content_label="GLIOMA", content_description="BraTS 2024 GLI labels (research software, not for diagnosis)",
        series_description=f"gliomaseg {model_name}"[:64],
    )
    with atomic_path(out_path) as tmp:
        seg.save_as(tmp)
    return Path(out_path)


def require_dicom_extra() -> None:
    """One line for users without highdicom (the prepare extra brings it)."""
    import importlib.util

    if importlib.util.find_spec("highdicom") is None:
        from gliomaseg.errors import extra_install_hint

        raise InputError(Path("highdicom"), f"not installed, so no DICOM SEG can be written; {extra_install_hint('prepare')} "
                                            "or use --no-dicom-seg")
