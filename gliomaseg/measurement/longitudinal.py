"""Change of the sum of bidimensional products over a patient's exams, with RANO 2.0's thresholds.

The thresholds are named as measurement categories, never as response assessments: RANO's response
also weighs non-enhancing disease, new lesions, steroids, the clinical state and confirmation scans,
none of which a label map holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

INCREASE_PCT = 25.0
"""RANO: an increase of at least 25 % of the sum of products over the smallest sum recorded since treatment started."""
DECREASE_PCT = 50.0
"""RANO: a decrease of at least 50 % of the sum of products against baseline."""

CATEGORIES: dict[str, str] = {
    "baseline": "the patient's first exam: the reference of later ones",
    "none_measurable": "no measurable enhancing lesion",
    "new_measurable": "measurable enhancing disease where the smallest earlier sum was 0",
    "increase_25pct_from_nadir": "sum of products up by at least 25 % from the smallest earlier sum",
    "decrease_50pct_from_baseline": "sum of products down by at least 50 % from baseline",
    "within_thresholds": "neither threshold crossed",
}
"""Measurement category -> what it says; checked in this order after the first exam (an increase wins over a decrease, as in RANO)."""


@dataclass(frozen=True)
class Change:
    """One exam's sum of products against the patient's baseline and the smallest earlier sum (the nadir)."""

    baseline_exam: str
    nadir_exam: str | None
    from_baseline_pct: float | None
    from_nadir_pct: float | None
    category: str


def _percent(value: float, reference: float) -> float | None:
    return round(100.0 * (value - reference) / reference, 1) if reference > 0 else None


def changes_over_time(exams: Sequence[tuple[str, float]]) -> list[Change]:
    """Per exam of one patient, in time order (``(exam, sum of products in mm2)``), its change and category."""
    if not exams:
        return []
    baseline_exam, baseline = exams[0]
    out = [Change(baseline_exam, None, None, None, "baseline")]
    nadir_exam, nadir = exams[0]
    for exam, total in exams[1:]:
        from_nadir = _percent(total, nadir)
        from_baseline = _percent(total, baseline)
        if total == 0:
            category = "none_measurable"
        elif nadir == 0:
            category = "new_measurable"
        elif from_nadir is not None and from_nadir >= INCREASE_PCT:
            category = "increase_25pct_from_nadir"
        elif from_baseline is not None and from_baseline <= -DECREASE_PCT:
            category = "decrease_50pct_from_baseline"
        else:
            category = "within_thresholds"
        out.append(Change(baseline_exam, nadir_exam, from_baseline, from_nadir, category))
        if total < nadir:
            nadir_exam, nadir = exam, total
    return out
