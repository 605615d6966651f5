"""Parameters of the BraTS 2024 GLI lesion-wise protocol, quirks included.

``OFFICIAL_PARAMETERS`` reproduce ``metrics_GLI.py`` of the BraTS-2024-Metrics repository
number for number. ``CORRECTED_PARAMETERS`` fix the places where that code contradicts
itself; use them for analysis, never to report challenge numbers.

Differences (official -> corrected):

* SNFH lesions are merged by a 3-voxel dilation, not the 5 the code intends:
  it tests ``t == "SFNH"`` (a typo) when building lesions, while matching uses
  5 only for NETC and RC as well. CORRECTED uses 5 for SNFH in both places.
* Touching lesions of two labels are merged only when *more than one* pair
  touches (``len(touching) > 1``); a single touching pair is left alone.
  CORRECTED merges from one pair on.
* Sensitivity and Specificity are computed on lesion-numbered maps: voxel
  counts become sums of lesion numbers and only lesion number 1 counts as a
  hit. CORRECTED uses the binary region masks.
* Legacy HD95 is computed on lesion-numbered maps, which DeepMind's code casts
  to uint8 neighbourhood codes, so the interior of every lesion numbered >= 2
  counts as surface. CORRECTED uses the binary region masks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FP_HD95 = 337.0
"""HD95 given to a false-positive lesion, a missed lesion and any infinite distance."""

NSD_TOLERANCES_MM: tuple[float, float] = (0.5, 1.0)


@dataclass(frozen=True)
class LesionWiseParameters:
    """How lesions are formed, matched and scored for each region."""

    # dilation (18-connected, in iterations) that merges nearby components into one lesion
    merge_dilation: dict[str, int]
    # dilation of a ground-truth lesion when looking for predicted lesions that hit it
    match_dilation: dict[str, int]
    # predicted lesions with at most this many voxels are dropped before matching;
    # ground-truth lesions with at most this many mm^3 are left out of the scores
    volume_threshold: dict[str, int] = field(
        default_factory=lambda: {"WT": 20, "TC": 20, "NETC": 20, "SNFH": 20, "ET": 10, "RC": 20}
    )
    min_touching_pairs_to_merge: int = 2
    binary_sensitivity: bool = False
    binary_legacy_hd95: bool = False


OFFICIAL_PARAMETERS = LesionWiseParameters(
    merge_dilation={"WT": 3, "TC": 3, "NETC": 5, "SNFH": 3, "ET": 3, "RC": 5},
    match_dilation={"WT": 3, "TC": 3, "NETC": 5, "SNFH": 3, "ET": 3, "RC": 5},
)

CORRECTED_PARAMETERS = LesionWiseParameters(
    merge_dilation={"WT": 3, "TC": 3, "NETC": 5, "SNFH": 5, "ET": 3, "RC": 5},
    match_dilation={"WT": 3, "TC": 3, "NETC": 5, "SNFH": 5, "ET": 3, "RC": 5},
    min_touching_pairs_to_merge=1,
    binary_sensitivity=True,
    binary_legacy_hd95=True,
)


# Labels whose touching lesions are merged into one, and with which other labels,
# in the order the official code applies them. WT and TC are never merged this way.
TOUCH_MERGE_ORDER: dict[str, tuple[str, ...]] = {
    "NETC": ("ET", "RC"),
    "ET": ("NETC", "RC"),
    "RC": ("ET", "NETC"),
    "SNFH": ("ET", "RC", "NETC"),
}
