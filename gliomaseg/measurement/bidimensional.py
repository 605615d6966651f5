"""RANO-style bidimensional measurement of enhancing lesions.

Each enhancing lesion is a 26-connected component of ET (label 3), as the BraTS lesion-wise metrics
count lesions. On the axial slice where the lesion is largest (its area with holes filled, so a ring-enhancing
lesion is measured where its ring is widest, not where it has most enhancing voxels), its longest diameter is the
longest line between two of its points, and the perpendicular diameter the longest line at right
angles to it (RANO: "the maximal diameter, and the second diameter at right angles to the first").
Both are measured between voxel centres plus half a voxel's width along the line: the outermost
voxel centres of a shape lie up to a voxel inside its edges, so a rasterised shape of diameter D
measures within about half a voxel of D in any orientation (whole voxels at both ends overshoot by
up to a voxel's diagonal, bare centres fall short by as much). A ring-enhancing lesion is measured across its ring, necrotic centre included.

"Axial" is the voxel axis closest to the patient's superior-inferior axis, read from the affine, so
any orientation, voxel size and shear is measured in mm on the scan's own slices.

A lesion is measurable, as RANO 2.0 defines it, when both diameters are at least 10 mm (twice the
slice thickness when slices are thicker than 5 mm) and it is seen on at least two axial slices.
"""

from __future__ import annotations

from dataclasses import dataclass

import cc3d
import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull

from gliomaseg.labels import REGIONS

MEASURABLE_MM = 10.0
THICK_SLICE_MM = 5.0
MIN_SLICES = 2
CONNECTIVITY = 26


@dataclass(frozen=True)
class Diameter:
    """A diameter's length in mm and its two ends as (fractional) voxel coordinates of the label map."""

    length_mm: float
    start: tuple[float, float, float]
    end: tuple[float, float, float]


@dataclass(frozen=True)
class EnhancingLesion:
    """One enhancing lesion's size: volume, the slice it is measured on and its two diameters."""

    number: int
    volume_ml: float
    axial_slice: int
    axial_slices: int
    longest: Diameter
    perpendicular: Diameter
    measurable: bool

    @property
    def product_mm2(self) -> float:
        return self.longest.length_mm * self.perpendicular.length_mm


@dataclass(frozen=True)
class SliceGeometry:
    """How a label map's voxels sit in the world: which voxel axis is axial, and the in-plane
    voxel edges as 2D vectors in mm in an orthonormal frame of the slice plane."""

    axial_axis: int
    in_plane: tuple[int, int]
    edges: np.ndarray  # (2, 2): rows are the in-plane axes' voxel edges in mm
    thickness_mm: float

    @classmethod
    def of(cls, affine: np.ndarray) -> SliceGeometry:
        columns = np.asarray(affine, float)[:3, :3]
        norms = np.linalg.norm(columns, axis=0)
        axial = int(np.argmax(np.abs(columns[2]) / norms))  # world z: superior in RAS and LPS alike
        a, b = (k for k in range(3) if k != axial)
        first = columns[:, a] / norms[a]
        second = columns[:, b] - (columns[:, b] @ first) * first
        second /= np.linalg.norm(second)
        edges = np.array([[norms[a], 0.0], [columns[:, b] @ first, columns[:, b] @ second]])
        return cls(axial, (a, b), edges, float(norms[axial]))

    @property
    def measurable_mm(self) -> float:
        return 2 * self.thickness_mm if self.thickness_mm > THICK_SLICE_MM else MEASURABLE_MM

    def half_width(self, direction: np.ndarray) -> float:
        """Half a voxel's extent along a unit in-plane ``direction`` (mm)."""
        return 0.5 * float(np.abs(self.edges @ direction).sum())


def _hull(points: np.ndarray) -> np.ndarray:
    """The points on the convex hull (all of them when there are too few for one); QJ copes with collinear points."""
    if len(points) <= 3:
        return points
    return points[ConvexHull(points, qhull_options="QJ").vertices]


def _longest(points: np.ndarray, geometry: SliceGeometry) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """(length, one end, the other end, unit direction) of the longest diameter of in-plane ``points`` (mm)."""
    hull = _hull(points)
    if len(hull) == 1:
        direction = np.array([1.0, 0.0])
        return geometry.half_width(direction), hull[0], hull[0], direction
    offsets = hull[None, :, :] - hull[:, None, :]
    distances = np.linalg.norm(offsets, axis=2)
    units = offsets / np.where(distances > 0, distances, 1.0)[..., None]
    lengths = distances + 0.5 * np.abs(units @ geometry.edges.T).sum(axis=2)
    lengths[distances == 0] = -1.0
    i, j = np.unravel_index(int(np.argmax(lengths)), lengths.shape)
    return float(lengths[i, j]), hull[i], hull[j], units[i, j]


def _perpendicular(points: np.ndarray, direction: np.ndarray, geometry: SliceGeometry) -> tuple[float, np.ndarray, np.ndarray]:
    """(length, ends) of the longest line at right angles to ``direction`` between two points of the lesion:
    on each line across the lesion, the distance between its outermost voxels (those the line passes through)."""
    normal = np.array([-direction[1], direction[0]])
    along, across = points @ direction, points @ normal
    order = np.argsort(along, kind="stable")
    along, across = along[order], across[order]
    reach = geometry.half_width(direction) + 1e-6
    lines = np.unique(along)
    lo = np.searchsorted(along, lines - reach, side="left")
    hi = np.searchsorted(along, lines + reach, side="right")
    bounds = np.column_stack([lo, hi]).ravel()
    padded_high = np.append(across, -np.inf)
    padded_low = np.append(across, np.inf)
    highest = np.maximum.reduceat(padded_high, bounds)[::2]
    lowest = np.minimum.reduceat(padded_low, bounds)[::2]
    best = int(np.argmax(highest - lowest))
    length = float(highest[best] - lowest[best]) + geometry.half_width(normal)
    at = lines[best]
    return length, at * direction + lowest[best] * normal, at * direction + highest[best] * normal


def _voxel(point: np.ndarray, slice_index: int, geometry: SliceGeometry) -> tuple[float, float, float]:
    """In-plane mm -> the label map's voxel coordinates on ``slice_index``."""
    i, j = np.linalg.solve(geometry.edges.T, point)
    voxel = [0.0, 0.0, 0.0]
    voxel[geometry.in_plane[0]], voxel[geometry.in_plane[1]], voxel[geometry.axial_axis] = float(i), float(j), float(slice_index)
    return tuple(round(v, 2) for v in voxel)  # type: ignore[return-value]


def measure_component(component: np.ndarray, geometry: SliceGeometry, offset: tuple[int, int, int] = (0, 0, 0),
                      number: int = 1, voxel_ml: float = 0.0) -> EnhancingLesion:
    """Measure one lesion given as a boolean mask (``offset``: where the mask's corner sits in the label map)."""
    axial = geometry.axial_axis
    in_plane_only = np.ones([1 if k == axial else 3 for k in range(3)], bool)
    per_slice = ndimage.binary_fill_holes(component, structure=in_plane_only).sum(axis=geometry.in_plane)
    local = int(np.argmax(per_slice))
    pixels = np.argwhere(np.take(component, local, axis=axial)).astype(float)
    pixels += [offset[k] for k in geometry.in_plane]
    points = pixels @ geometry.edges
    slice_index = local + offset[axial]
    length, start, end, direction = _longest(points, geometry)
    width, across_start, across_end = _perpendicular(points, direction, geometry)
    longest = Diameter(round(length, 2), _voxel(start, slice_index, geometry), _voxel(end, slice_index, geometry))
    perpendicular = Diameter(round(width, 2), _voxel(across_start, slice_index, geometry), _voxel(across_end, slice_index, geometry))
    slices = int(np.count_nonzero(per_slice))
    threshold = geometry.measurable_mm
    measurable = longest.length_mm >= threshold and perpendicular.length_mm >= threshold and slices >= MIN_SLICES
    return EnhancingLesion(number, round(float(component.sum()) * voxel_ml, 4), slice_index, slices, longest, perpendicular, measurable)


def enhancing_lesions(label_map: np.ndarray, affine: np.ndarray) -> list[EnhancingLesion]:
    """Every enhancing lesion of a label map, largest volume first, numbered from 1 in that order."""
    geometry = SliceGeometry.of(affine)
    voxel_ml = float(np.prod(np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0))) / 1000.0
    enhancing = label_map == REGIONS["ET"][0]
    if not enhancing.any():
        return []
    components, count = cc3d.connected_components(enhancing, connectivity=CONNECTIVITY, return_N=True)
    stats = cc3d.statistics(components)
    ranked = sorted(range(1, count + 1), key=lambda k: -int(stats["voxel_counts"][k]))
    lesions = []
    for number, label in enumerate(ranked, start=1):
        box = stats["bounding_boxes"][label]
        lesions.append(measure_component(components[box] == label, geometry, tuple(s.start for s in box), number, voxel_ml))
    return lesions
