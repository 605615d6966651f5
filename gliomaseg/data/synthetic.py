"""Synthetic post-treatment glioma cases in BraTS layout, for demos, tests and benchmarks.

A brain-shaped head (white matter, cortex, ventricles) with per-modality contrast,
and lesions made of the 2024 labels: resection cavity (fluid: dark on T1 and
FLAIR, bright on T2, like the ventricles), non-enhancing core, an enhancing rim
bright on T1c, and surrounding FLAIR hyperintensity; plus noise and a smooth bias
field. As in the 2024 post-treatment data, a cavity is where the main tumour was
resected (1.5-15 mL, lined by residual core and a 2-5 mm enhancing rim); other
lesions are smaller and unresected. Patients may have two timepoints with the same
anatomy and an evolved lesion.
Everything is a function of (seed, patient): the same call writes the same files.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cc3d
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from gliomaseg.batch import run_batch
from gliomaseg.io.nifti import NIFTI_SUFFIX, save_image, save_label_map
from gliomaseg.labels import MODALITIES, SEG_SUFFIX

MNI_SHAPE = (182, 218, 182)

# Mean intensity of each tissue per modality (t1n, t1c, t2w, t2f), before scaling.
_CONTRAST = {
    "wm": (0.75, 0.72, 0.35, 0.45),
    "gm": (0.55, 0.55, 0.55, 0.60),
    "csf": (0.20, 0.20, 1.00, 0.12),
    "NETC": (0.45, 0.50, 0.75, 0.75),
    "SNFH": (0.60, 0.60, 0.82, 1.00),
    "ET": (0.50, 1.25, 0.62, 0.80),
    "RC": (0.15, 0.18, 0.95, 0.20),
}
_SCANNER_SCALE = (900.0, 1100.0, 1400.0, 800.0)  # arbitrary units differ per sequence, as in real data


@dataclass(frozen=True)
class LesionSpec:
    """One lesion: centre (voxels), core radius (mm), oedema/core ratio, which parts it has.

    ``cavity_fraction`` is the cavity's radius as a fraction of the core's (0: no cavity);
    ``rim_mm`` the enhancing rim's thickness.
    """

    centre: tuple[float, float, float]
    core_radius: float
    oedema_ratio: float
    cavity_fraction: float
    has_enhancement: bool
    rim_mm: float
    shape_seed: int

    @property
    def has_cavity(self) -> bool:
        return self.cavity_fraction > 0


def _smooth_noise(shape: tuple[int, ...], rng: np.random.Generator, cells: int = 6) -> np.ndarray:
    """Low-frequency noise in about [-1, 1] over ``shape``."""
    coarse = torch.from_numpy(rng.standard_normal(tuple(max(2, cells) for _ in shape)).astype(np.float32))
    # trilinear upsampling; torch's is several times faster than scipy's zoom on whole heads
    return F.interpolate(coarse[None, None], size=shape, mode="trilinear", align_corners=False)[0, 0].numpy()


def ellipsoid_distance(shape: tuple[int, ...], centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Over a grid of ``shape``, each voxel's distance from ``centre`` in units of the ellipsoid's ``radii``
    (voxels): below 1 inside it."""
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    return np.sqrt(sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)))


def _anatomy(shape: tuple[int, int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(tissue map: 0 outside, 1 wm, 2 gm, 3 csf; normalised head radius field)."""
    dims = np.asarray(shape, dtype=float)
    centre = dims / 2 + rng.uniform(-2, 2, 3)
    radii = dims * np.array([0.36, 0.38, 0.36]) * rng.uniform(0.95, 1.05, 3)
    radius = ellipsoid_distance(shape, centre, radii) * (1 + 0.04 * _smooth_noise(shape, rng, 5))
    tissue = np.zeros(shape, np.uint8)
    tissue[radius < 1.0] = 2
    folds = 0.86 + 0.05 * _smooth_noise(shape, rng, 14)
    tissue[radius < folds] = 1
    for side in (-1, 1):
        v_centre = centre + np.array([side * radii[0] * 0.12, -radii[1] * 0.05, radii[2] * 0.1])
        v_radii = radii * np.array([0.08, 0.30, 0.12])
        tissue[ellipsoid_distance(shape, v_centre, v_radii) < 1.0] = 3
    return tissue, radius


def _lesion_labels(shape: tuple[int, int, int], lesion: LesionSpec, inside: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray]:
    """Label map of one lesion within its bounding box (box, labels)."""
    extent = lesion.core_radius * lesion.oedema_ratio * 1.3 + 2
    centre = np.asarray(lesion.centre)
    box = tuple(slice(max(0, int(c - extent)), min(s, int(c + extent) + 1)) for c, s in zip(centre, shape))
    local_shape = tuple(b.stop - b.start for b in box)
    local_centre = centre - np.array([b.start for b in box])
    rng = np.random.default_rng(lesion.shape_seed)
    wobble = 1 + 0.18 * _smooth_noise(local_shape, rng, 4)
    core = ellipsoid_distance(local_shape, local_centre, np.full(3, lesion.core_radius)) * wobble
    oedema = ellipsoid_distance(local_shape, local_centre, np.full(3, lesion.core_radius * lesion.oedema_ratio)) * (
        1 + 0.25 * _smooth_noise(local_shape, rng, 5)
    )
    labels = np.zeros(local_shape, np.uint8)
    labels[oedema < 1.0] = 2
    labels[core < 1.0] = 1
    if lesion.has_enhancement:
        labels[(core < 1.0) & (core > 1 - lesion.rim_mm / lesion.core_radius)] = 3
    if lesion.has_cavity:
        labels[core < lesion.cavity_fraction] = 4
    labels[~inside[box]] = 0
    # The noisy oedema boundary can pinch off specks; a lesion is one connected blob.
    labels[~cc3d.largest_k(labels > 0, k=1, connectivity=26).astype(bool)] = 0
    return box, labels


_CAVITY_FRACTION = (0.55, 0.75)  # resected tumours: the cavity fills most of what is left of the core


def _cavity_fraction(rng: np.random.Generator, core_radius: float, rim_mm: float) -> float:
    """A cavity radius fraction that leaves the rim and at least 1.5 mm of non-enhancing core."""
    return float(min(rng.uniform(*_CAVITY_FRACTION), 1 - (rim_mm + 1.5) / core_radius))


def random_lesions(
    rng: np.random.Generator, shape: tuple[int, int, int], radius: np.ndarray, count: int
) -> list[LesionSpec]:
    """``count`` lesions placed in deep brain (normalised radius < 0.6), varied in size and make-up.

    The first is the main tumour, resected in 60 % of cases; the others are smaller, unresected lesions.
    """
    candidates = np.argwhere(radius < 0.6)
    lesions = []
    for index in range(count):
        centre = candidates[rng.integers(len(candidates))].astype(float)
        resected = index == 0 and rng.random() < 0.6
        core_radius = float(rng.uniform(13, 20) if resected else rng.uniform(9, 15) if index == 0 else rng.uniform(5, 12))
        rim_mm = float(rng.uniform(2, 5))
        lesions.append(
            LesionSpec(
                centre=tuple(centre),
                core_radius=core_radius,
                oedema_ratio=float(rng.uniform(1.3, 1.8) if resected else rng.uniform(1.5, 2.3)),
                cavity_fraction=_cavity_fraction(rng, core_radius, rim_mm) if resected else 0.0,
                has_enhancement=bool(rng.random() < 0.8),
                rim_mm=rim_mm,
                shape_seed=int(rng.integers(2**31)),
            )
        )
    return lesions


def evolve(lesions: list[LesionSpec], rng: np.random.Generator) -> list[LesionSpec]:
    """The next timepoint: the main lesion resected (a cavity, the core around it thinned), the others grown or shrunk."""
    evolved = []
    for index, lesion in enumerate(lesions):
        core_radius = lesion.core_radius * float(rng.uniform(0.8, 1.25))
        if index == 0 and not lesion.has_cavity:
            core_radius = max(core_radius, 13.0)
        cavity = lesion.cavity_fraction or (_cavity_fraction(rng, core_radius, lesion.rim_mm) if index == 0 else 0.0)
        evolved.append(
            LesionSpec(
                centre=lesion.centre,
                core_radius=core_radius,
                oedema_ratio=lesion.oedema_ratio * float(rng.uniform(0.8, 1.1)),
                cavity_fraction=cavity,
                has_enhancement=lesion.has_enhancement and rng.random() < 0.8,
                rim_mm=lesion.rim_mm,
                shape_seed=lesion.shape_seed + 1,
            )
        )
    return evolved


def render_case(tissue: np.ndarray, lesions: list[LesionSpec], noise_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(images (4, X, Y, Z) float32 in MODALITIES order, label map (X, Y, Z) uint8) of a tissue map."""
    shape = tissue.shape
    inside = tissue > 0
    seg = np.zeros(shape, np.uint8)
    for lesion in lesions:
        box, labels = _lesion_labels(shape, lesion, inside)
        seg[box] = np.where(labels > 0, labels, seg[box])
    rng = np.random.default_rng(noise_seed)
    images = np.zeros((len(MODALITIES),) + shape, np.float32)
    names = {1: "wm", 2: "gm", 3: "csf"}
    for channel in range(len(MODALITIES)):
        values = np.zeros(shape, np.float32)
        for code, name in names.items():
            values[tissue == code] = _CONTRAST[name][channel]
        for code, name in ((2, "SNFH"), (1, "NETC"), (3, "ET"), (4, "RC")):
            values[seg == code] = _CONTRAST[name][channel]
        values = ndimage.gaussian_filter(values, 0.8)
        bias = np.exp(0.12 * _smooth_noise(shape, rng, 4))
        noisy = np.abs(values * bias + rng.normal(0, 0.03, shape).astype(np.float32))
        images[channel] = np.where(inside, noisy * _SCANNER_SCALE[channel], 0)
    return images, seg


def synthetic_affine(shape: tuple[int, int, int]) -> np.ndarray:
    """1 mm RAS-flipped affine (as BraTS files have) centring the volume on the origin."""
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[:3, 3] = [(shape[0] - 1) / 2, (shape[1] - 1) / 2, -(shape[2] - 1) / 2]
    return affine


def case_plan(n_cases: int) -> dict[int, list[int]]:
    """Timepoints of each patient: every other patient has a second one; ``n_cases`` in all."""
    plan: dict[int, list[int]] = {}
    patient = 0
    while sum(map(len, plan.values())) < n_cases:
        plan[patient] = [0]
        if patient % 2 == 1 and sum(map(len, plan.values())) < n_cases:
            plan[patient].append(1)
        patient += 1
    return plan


def _write_patient(plan_item: tuple[int, list[int]], out_dir: Path, seed: int, shape: tuple[int, int, int], prefix: str) -> list[Path]:
    """Write every timepoint of one (patient, timepoints): one anatomy, the lesions evolving from one to the next."""
    patient, timepoints = plan_item
    affine = synthetic_affine(shape)
    tissue, radius = _anatomy(shape, np.random.default_rng([seed, patient]))
    folders: list[Path] = []
    lesions: list[LesionSpec] = []
    for tp in timepoints:
        case_id = f"{prefix}-{(90000 + seed * 1000 + patient) % 100000:05d}-{tp:03d}"
        rng = np.random.default_rng([seed, patient, tp])
        if tp == 0:
            lesions = random_lesions(rng, shape, radius, count=int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2])))
        else:
            lesions = evolve(lesions, rng)
        images, seg = render_case(tissue, lesions, noise_seed=int(rng.integers(2**31)))
        folder = out_dir / case_id
        for channel, modality in enumerate(MODALITIES):
            save_image(images[channel], affine, folder / f"{case_id}-{modality}{NIFTI_SUFFIX}")
        save_label_map(seg, affine, folder / f"{case_id}-{SEG_SUFFIX}{NIFTI_SUFFIX}")
        folders.append(folder)
    return folders


def write_synthetic_dataset(
    out_dir: Path | str,
    n_cases: int,
    seed: int = 0,
    shape: tuple[int, int, int] = MNI_SHAPE,
    prefix: str = "BraTS-GLI",
    workers: int = 1,
    quiet: bool = True,
) -> list[Path]:
    """Write ``n_cases`` BraTS-layout cases with labels (one patient per task, ``workers`` in parallel); returns their folders."""
    plan = case_plan(n_cases)
    report = run_batch(
        list(plan.items()),
        name=lambda item: str(item[0]),
        work=partial(_write_patient, out_dir=Path(out_dir), seed=seed, shape=tuple(shape), prefix=prefix),
        workers=workers,
        desc="synthesise (patients)",
        fail_fast=True,
        quiet=quiet,
    )
    return [folder for patient in plan for folder in report.results[str(patient)]]

