"""Post-treatment cases on real anatomy: a resection cavity carved where a real pre-operative tumour is.

The BraTS 2024 annotation protocol labels the resection cavity (RC, 4) as the fluid-filled space
left by surgery, the residual enhancing tissue (ET, 3) on its wall or as a nodule, non-enhancing
core (NETC, 1) and the surrounding FLAIR hyperintensity (SNFH, 2) around it. From a labelled
pre-operative case this module makes such a case: a cavity covering part or all of the tumour
core (sometimes beyond it), its shape a perturbed, partly collapsed ellipsoid, filled as fluid is
seen on each sequence, with the host's own fluid: the intensities of its cerebrospinal fluid
(dark on T1n and T1c, bright on T2w, suppressed on FLAIR, mixed towards white matter as
proteinaceous cavity fluid often is), sometimes with blood products settled at the bottom (a
fluid level: bright on T1, dark on T2). Residual enhancement lines part of the cavity wall or
forms a nodule, with the intensities of the host's own enhancing tumour. Everything outside the
carved region, images and labels alike, is the host's, voxel for voxel, and nothing is carved
outside the brain.

Why not ``resector`` (pip, the simulation of Pérez-García et al., MICCAI 2020): it carves T1 images
only, needs a GIF brain parcellation to place cavities in resectable cortex and to sample CSF, and
places them for epilepsy surgery, not where a tumour is; here four co-registered sequences must
change together, the cavity must replace the labelled tumour, and no parcellation exists.

Every choice is drawn from ``numpy.random.default_rng([seed, k, crc32(host id)])``: the same host,
seed and k give the same case, and hosts do not share their draws.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import zlib

import cc3d
import numpy as np
from scipy import ndimage

from gliomaseg.batch import run_batch
from gliomaseg.data.synthetic import ellipsoid_distance
from gliomaseg.errors import InputError
from gliomaseg.io.cases import Case, LoadedCase, discover_cases, load_case, patient_id
from gliomaseg.io.nifti import NIFTI_SUFFIX, save_image, save_label_map
from gliomaseg.labels import MODALITIES, SEG_SUFFIX, region_mask

log = logging.getLogger("gliomaseg")
CHANNEL = {m: i for i, m in enumerate(MODALITIES)}
WALL_MARGIN_MM = 2.0  # the cavity stays this far inside the brain's edge
MIN_CAVITY_ML = 0.5
CARVE_JSON = "carve.json"


@dataclass(frozen=True)
class CavityPlan:
    """What one carving draws: the cavity's size against the tumour core, its shape and its contents."""

    coverage: float  # cavity radii as a fraction of the core's (over 1: resected beyond the core)
    offset: tuple[float, float, float]  # centre shift from the core's centre, as a fraction of its radii
    collapse_axis: int  # the axis along which the cavity has partly collapsed
    collapse: float  # the radius kept along that axis (1: none)
    wobble: float  # relative amplitude of the wall's irregularity
    flair_protein: float  # 0: FLAIR fill as suppressed as CSF, 1: as bright as white matter
    blood_level: float  # fraction of the cavity's height filled by settled blood products (0: none)
    residual: str  # "rim" (enhancement on part of the wall), "nodule" or "none"
    residual_mm: float  # rim thickness or nodule radius

    @classmethod
    def draw(cls, rng: np.random.Generator) -> CavityPlan:
        residual = str(rng.choice(["rim", "nodule", "none"], p=[0.55, 0.25, 0.20]))
        return cls(
            coverage=float(rng.uniform(0.7, 1.25)),
            offset=tuple(float(v) for v in rng.uniform(-0.25, 0.25, 3)),
            collapse_axis=int(rng.integers(3)),
            collapse=float(rng.uniform(0.45, 1.0)),
            wobble=float(rng.uniform(0.05, 0.2)),
            flair_protein=float(rng.uniform(0.0, 0.6)),
            blood_level=float(rng.uniform(0.15, 0.4)) if rng.random() < 0.3 else 0.0,
            residual=residual,
            residual_mm=float(rng.uniform(1.5, 3.5) if residual == "rim" else rng.uniform(3.0, 6.0)),
        )


@dataclass(frozen=True)
class CarvedCase:
    """A carved case: its images (4, X, Y, Z), labels, the carved region and what was drawn."""

    image: np.ndarray
    label: np.ndarray
    carved: np.ndarray  # every voxel that differs from the host may differ only here
    plan: CavityPlan
    cavity_ml: float  # labelled RC
    carved_ml: float  # RC and the residual enhancement carved with it

    def record(self) -> dict:
        return {"plan": asdict(self.plan), "cavity_ml": round(self.cavity_ml, 2), "carved_ml": round(self.carved_ml, 2)}


def brain_mask(image: np.ndarray) -> np.ndarray:
    """The skull-stripped brain: voxels where any sequence is non-zero, as one component with its holes filled."""
    brain = np.any(image != 0, axis=0)
    return ndimage.binary_fill_holes(cc3d.largest_k(brain, k=1, connectivity=6) > 0)


def _smooth_noise(shape: tuple[int, ...], rng: np.random.Generator, cells: int = 4) -> np.ndarray:
    coarse = rng.standard_normal((cells,) * len(shape))
    return ndimage.zoom(coarse, [s / cells for s in shape], order=3, mode="nearest")[tuple(slice(0, s) for s in shape)]


def _fluid_intensities(image: np.ndarray, brain: np.ndarray, tumour: np.ndarray) -> dict[str, tuple[float, float]]:
    """(mean, spread) per sequence of the host's cerebrospinal fluid: bright on T2w and dark on T1n within the
    brain, away from the tumour; the extreme percentiles of the brain where too few such voxels exist."""
    healthy = brain & ~tumour
    t2w, t1n = image[CHANNEL["t2w"]], image[CHANNEL["t1n"]]
    fluid = healthy & (t2w > np.percentile(t2w[healthy], 97)) & (t1n < np.percentile(t1n[healthy], 25))
    values = {}
    for modality, channel in CHANNEL.items():
        inside = image[channel][healthy]
        if fluid.sum() >= 200:
            chosen = image[channel][fluid]
            values[modality] = (float(np.median(chosen)), float(np.std(chosen)) * 0.5)
        else:
            percentile = 99 if modality == "t2w" else 3
            values[modality] = (float(np.percentile(inside, percentile)), float(np.std(inside)) * 0.05)
    return values


def _tissue_median(image: np.ndarray, where: np.ndarray, fallback: np.ndarray, percentile: float) -> np.ndarray:
    """Per sequence, the median over ``where`` (the host's own tissue) or a percentile of ``fallback``."""
    if where.sum() >= 50:
        return np.array([np.median(image[c][where]) for c in range(image.shape[0])])
    return np.array([np.percentile(image[c][fallback], percentile) for c in range(image.shape[0])])


@dataclass(frozen=True)
class HostTissue:
    """What every carving of one host reads from it: computed once per host, however many cavities are carved."""

    brain: np.ndarray
    inner: np.ndarray  # the brain more than WALL_MARGIN_MM inside its edge: where a cavity may go
    tumour: np.ndarray  # its whole tumour
    fluid: dict[str, tuple[float, float]]  # _fluid_intensities
    white_matter_flair: float
    healthy: np.ndarray  # per sequence, the median of the healthy brain (what settled blood is drawn against)
    enhancing: np.ndarray  # per sequence, the median of its enhancing tumour (what residual enhancement takes)


def host_tissue(case: LoadedCase) -> HostTissue:
    """The host's brain, where a cavity may lie, and the intensities a carving fills with."""
    spacing = np.asarray(case.spacing, float)
    brain = brain_mask(case.image)
    tumour = region_mask(case.label, "WT")
    return HostTissue(
        brain=brain,
        inner=ndimage.distance_transform_edt(brain, sampling=spacing) > WALL_MARGIN_MM,
        tumour=tumour,
        fluid=_fluid_intensities(case.image, brain, tumour),
        white_matter_flair=float(np.percentile(case.image[CHANNEL["t2f"]][brain & ~tumour], 60)),
        healthy=_tissue_median(case.image, brain & ~tumour, brain, 50),
        enhancing=_tissue_median(case.image, case.label == 3, brain, 97),
    )


def _cavity_shape(core: np.ndarray, spacing: np.ndarray, plan: CavityPlan, rng: np.random.Generator) -> np.ndarray:
    """A perturbed, partly collapsed ellipsoid over the tumour core's extent (computed in a box around it)."""
    points = np.argwhere(core)
    centre = points.mean(axis=0)
    radii_mm = np.maximum((points.max(axis=0) - points.min(axis=0) + 1) * spacing / 2, 3.0)
    radii_mm = radii_mm * plan.coverage
    radii_mm[plan.collapse_axis] *= plan.collapse
    centre = centre + np.asarray(plan.offset) * radii_mm / spacing
    reach = radii_mm * (1 + 2 * plan.wobble) / spacing + 2
    box = tuple(slice(max(0, int(c - r)), min(n, int(np.ceil(c + r)) + 1)) for c, r, n in zip(centre, reach, core.shape))
    local = tuple(b.stop - b.start for b in box)
    distance = ellipsoid_distance(local, centre - [b.start for b in box], radii_mm / spacing)
    shape = np.zeros(core.shape, bool)
    shape[box] = distance * (1 + plan.wobble * _smooth_noise(local, rng)) < 1.0
    return shape


def _texture(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Unit-variance noise correlated over about a voxel, as MR noise looks after reconstruction."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), 0.8)
    return noise / max(float(noise.std()), 1e-6)


def carve_cavity(case: LoadedCase, seed: int, index: int = 0, tissue: HostTissue | None = None) -> CarvedCase:
    """Carve one resection cavity into a labelled pre-operative case (see the module's doc); ``tissue`` is the
    case's :func:`host_tissue`, given when several cavities are carved into one host."""
    if case.label is None:
        raise InputError(case.case_id, "has no label map: a cavity is carved where its tumour is")
    core = region_mask(case.label, "TC")
    if core.sum() < 50:
        raise InputError(case.case_id, f"has no tumour core to resect ({int(core.sum())} TC voxels)")
    rng = np.random.default_rng([seed, index, zlib.crc32(case.case_id.encode())])
    plan = CavityPlan.draw(rng)
    spacing = np.asarray(case.spacing, float)
    tissue = tissue or host_tissue(case)
    carved = _cavity_shape(core, spacing, plan, rng) & tissue.inner
    carved = cc3d.largest_k(carved, k=1, connectivity=26) > 0 if carved.any() else carved
    voxel_ml = float(np.prod(spacing)) / 1000
    if carved.sum() * voxel_ml < MIN_CAVITY_ML:
        raise InputError(case.case_id, "the tumour core lies too close to the brain's edge for a cavity")
    image, label = case.image.copy(), case.label.copy()
    depth = ndimage.distance_transform_edt(carved, sampling=spacing)
    wall = carved & (depth <= plan.residual_mm)
    enhancing = np.zeros_like(carved)
    if plan.residual == "rim":  # on the part of the wall that faces one side
        normal = rng.standard_normal(3)
        centre = np.argwhere(carved).mean(axis=0)
        side = sum((g - c) * n for g, c, n in zip(np.ogrid[tuple(slice(0, s) for s in carved.shape)], centre, normal))
        enhancing = wall & (side > np.percentile(side[wall], rng.uniform(30, 70)))
    elif plan.residual == "nodule":
        seed_voxel = np.argwhere(wall)[rng.integers(int(wall.sum()))]
        enhancing = carved & (ellipsoid_distance(carved.shape, seed_voxel, 1 / spacing) < plan.residual_mm)
    fluid = carved & ~enhancing
    fill = tissue.fluid
    box = ndimage.find_objects(carved.astype(np.uint8))[0]
    for modality, channel in CHANNEL.items():
        mean, spread = fill[modality]
        if modality == "t2f":
            mean = mean + plan.flair_protein * (tissue.white_matter_flair - mean)
        values = mean + spread * _texture(tuple(b.stop - b.start for b in box), rng)
        image[channel][box][fluid[box]] = np.maximum(values[fluid[box]], 0)
    if plan.blood_level > 0:  # settled blood at the bottom of the cavity: its lowest part in world z (superior)
        voxels = np.argwhere(fluid)
        height = voxels @ case.affine[2, :3]
        low = voxels[height <= np.percentile(height, 100 * plan.blood_level)]
        bottom = np.zeros_like(fluid)
        bottom[tuple(low.T)] = True
        for modality, factor in (("t1n", 1.2), ("t1c", 1.2), ("t2w", 0.35), ("t2f", 0.9)):
            channel = CHANNEL[modality]
            reference = fill["t2w"][0] if modality == "t2w" else tissue.healthy[channel]
            image[channel][bottom] = reference * factor
    if enhancing.any():
        for channel in range(image.shape[0]):
            image[channel][enhancing] = tissue.enhancing[channel] * (1 + 0.05 * rng.standard_normal(int(enhancing.sum())))
    # partial volume at the cavity's edge: its outermost layer half host, half fill
    edge = fluid & (depth <= spacing.min())
    image[:, edge] = 0.5 * image[:, edge] + 0.5 * case.image[:, edge]
    label[fluid] = 4
    label[enhancing] = 3
    return CarvedCase(image, label, carved, plan, float(fluid.sum()) * voxel_ml, float(carved.sum()) * voxel_ml)


def carved_case_id(host_id: str, index: int) -> str:
    """``<host's patient>-1KK``: a later timepoint of the host's own patient (so patient-wise splits keep
    host and carved cases together), numbered from 101 to tell it from a real timepoint."""
    return f"{patient_id(host_id)}-{100 + index:03d}"


def _write_host(host: Case, out_dir: Path, per_case: int, seed: int) -> list[Path]:
    """Carve ``per_case`` cases from one host into ``out_dir`` (each folder complete or absent)."""
    wanted = [(k, out_dir / carved_case_id(host.case_id, k)) for k in range(1, per_case + 1)]
    todo = [(k, folder) for k, folder in wanted if not (folder / CARVE_JSON).exists()]
    if not todo:
        return [folder for _, folder in wanted]
    loaded = load_case(host)
    tissue = host_tissue(loaded)
    for k, folder in todo:
        carved = carve_cavity(loaded, seed, k, tissue)
        work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=out_dir))
        try:
            for channel, modality in enumerate(MODALITIES):
                save_image(carved.image[channel], loaded.affine, work / f"{folder.name}-{modality}{NIFTI_SUFFIX}")
            save_label_map(carved.label, loaded.affine, work / f"{folder.name}-{SEG_SUFFIX}{NIFTI_SUFFIX}", loaded.space)
            record = {"host": host.case_id, "seed": seed, "index": k, **carved.record()}
            (work / CARVE_JSON).write_text(json.dumps(record, indent=2) + "\n")
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(work, folder)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return [folder for _, folder in wanted]


def write_carved_cases(hosts: Path | str, out_dir: Path | str, per_case: int = 1, seed: int = 0, workers: int = 1,
                       quiet: bool = True) -> list[Path]:
    """``per_case`` carved post-treatment cases of every labelled case under ``hosts``, into ``out_dir``
    (with ``carve.json``: host, seed and what was drawn); finished cases are skipped on a re-run."""
    out_dir = Path(out_dir)
    found = discover_cases(hosts)
    labelled = [case for case in found if case.seg is not None]
    if not labelled:
        raise InputError(Path(hosts), "holds no labelled case (<case>-seg.nii.gz): a cavity is carved where a labelled tumour is")
    if len(labelled) < len(found):
        log.info("skipping %d case(s) without a label map", len(found) - len(labelled))
    out_dir.mkdir(parents=True, exist_ok=True)
    report = run_batch(labelled, name=lambda c: c.case_id,
                       work=partial(_write_host, out_dir=out_dir, per_case=per_case, seed=seed), workers=workers,
                       desc="carve", fail_fast=True, quiet=quiet)
    return [folder for folders in report.results.values() for folder in folders]
