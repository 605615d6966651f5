"""The 2026 protocol against brats-evaluation 0.0.10 (panoptica 2.1.7)'s recorded output.

Two sets: the shared metric fixtures (29 pairs), and ``fixtures/panoptic-unseen`` (9 pairs
written after the implementation, aimed at optimal matching, anisotropic voxels, the image
edge, disjoint maps and many small lesions; ``make_pairs.py`` there made and scored them).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import METRIC_FIXTURES, evaluate_folders
from gliomaseg.cli import app
from gliomaseg.evaluation.evaluate import CasePair, score_pair
from gliomaseg.evaluation.panoptic import COUNT_COLUMNS, PANOPTIC_COLUMNS, panoptic_scores
from gliomaseg.evaluation.protocol import BRATS2026
from gliomaseg.labels import REGIONS
from gliomaseg.postprocessing.tuning import ValidationCase, tune_rules

UNSEEN = Path(__file__).resolve().parent / "fixtures" / "panoptic-unseen"


def _pairs(root: Path) -> list[tuple[Path, dict, dict]]:
    expected = json.loads((root / "expected-panoptica.json").read_text())
    return [(root, pair, expected[pair["case_id"]]) for pair in csv.DictReader((root / "pairs.csv").open())]


PAIRS = _pairs(METRIC_FIXTURES) + _pairs(UNSEEN)


def _number(value) -> float:
    return float(value) if not isinstance(value, str) else float(value.replace("Infinity", "inf"))


def _assert_same(ours: float, theirs, what: str) -> None:
    expected = _number(theirs)
    if math.isnan(expected):
        assert math.isnan(ours), f"{what}: ours {ours}, brats-evaluation NaN"
    elif math.isinf(expected):
        assert ours == expected, f"{what}: ours {ours}, brats-evaluation {expected}"
    else:
        assert ours == pytest.approx(expected, abs=1e-6, rel=0), f"{what}: ours {ours}, brats-evaluation {expected}"


@pytest.mark.parametrize("root, pair, expected", PAIRS, ids=[p["case_id"] for _, p, _ in PAIRS])
def test_every_key_and_reference_lesion_matches_brats_evaluation(root, pair, expected):
    case_id = pair["case_id"]
    result = score_pair(CasePair(case_id, root / pair["pred_path"], root / pair["gt_path"]), BRATS2026)
    for region in REGIONS:
        theirs = expected["regions"][region.lower()]
        for key in PANOPTIC_COLUMNS:
            where = f"{case_id} {region} {key}"
            if key not in theirs:  # panoptica drops what it cannot compute: prec without predictions, rec without references
                assert key in ("prec", "rec") and math.isnan(result.regions[region][key]), where
            elif key in COUNT_COLUMNS:
                assert result.regions[region][key] == theirs[key], where
            else:
                _assert_same(result.regions[region][key], theirs[key], where)
        ours = [lesion for lesion in result.lesions if lesion.region == region]
        assert len(ours) == len(theirs["reference_instances"]), f"{case_id} {region} reference lesions"
        for lesion, listed in zip(ours, theirs["reference_instances"]):
            where = f"{case_id} {region} lesion {lesion.number}"
            assert (lesion.voxel_count, int(lesion.matched)) == (listed["voxel_count"], listed["is_matched"]), where
            _assert_same(lesion.volume_mm3, listed["volume"], f"{where} volume")
            for key in ("dsc", "hd95", "nsd"):
                if lesion.matched:
                    _assert_same(getattr(lesion, key), listed[f"sq_{key}"], f"{where} {key}")
                else:
                    assert f"sq_{key}" not in listed and math.isnan(getattr(lesion, key)), where


def test_matching_maximises_total_dice_not_the_best_pair_first():
    truth = np.zeros((48, 24, 24), np.uint8)
    truth[10:30, 2:22, 2:22] = 3  # A
    truth[34:40, 2:22, 2:22] = 3  # B
    pred = np.zeros_like(truth)
    pred[18:37, 2:22, 2:22] = 3  # P1: Dice .62 with A, .24 with B
    pred[8:16, 2:22, 2:22] = 3  # P2: Dice .43 with A
    rows, lesions = panoptic_scores(pred, truth, (1.0, 1.0, 1.0))
    # Best pair first would match A-P1 and leave B missed; the assignment matches both.
    assert rows["ET"]["tp"] == 2 and rows["ET"]["fn"] == 0
    assert rows["ET"]["sq_dsc"] == pytest.approx((2 * 6 / 28 + 2 * 3 / 25) / 2)
    assert [lesion.matched for lesion in lesions if lesion.region == "ET"] == [True, True]


def test_cli_writes_brats_evaluation_keys_nan_and_inf(tmp_path):
    chosen = [(root, p, e) for root, p, e in PAIRS if p["case_id"] in ("syn-0001", "edge-empty-pred", "unseen-apart")]
    result, out, lesions, summary = evaluate_folders(tmp_path, [(root, p) for root, p, _ in chosen], "--protocol", "brats2026")
    assert result.exit_code == 0, result.output
    assert "BraTS 2026" in result.output and "pq_dsc" in result.output
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["case_id", "region", *PANOPTIC_COLUMNS]
    assert len(rows) == len(chosen) * len(REGIONS)
    expected = {p["case_id"]: e for _, p, e in chosen}
    for row in rows:
        theirs = expected[row["case_id"]]["regions"][row["region"].lower()]
        for key in PANOPTIC_COLUMNS:
            _assert_same(float(row[key]), theirs.get(key, "NaN"), f"{row['case_id']} {row['region']} {key}")
    empty_pred = next(r for r in rows if r["case_id"] == "edge-empty-pred" and r["region"] == "WT")
    assert (empty_pred["prec"], empty_pred["sq_hd95"], empty_pred["global_bin_hd95"]) == ("nan", "inf", "inf")
    listed = list(csv.DictReader(lesions.open()))
    assert list(listed[0]) == list(BRATS2026.lesion_columns)
    n_reference = sum(len(e["regions"][r]["reference_instances"]) for e in expected.values() for r in e["regions"])
    assert len(listed) == n_reference
    assert "pq_dsc" in summary.read_text().splitlines()[0]


def test_corrected_is_refused_with_the_2026_protocol(tmp_path):
    root, pair, _ = PAIRS[0]
    result = CliRunner().invoke(app, ["evaluate", "--pred", str(root / pair["pred_path"]), "--gt", str(root / pair["gt_path"]),
                                      "--out", str(tmp_path / "o.csv"), "--protocol", "brats2026", "--corrected"])
    assert result.exit_code != 0 and "--corrected" in result.output
    assert not (tmp_path / "o.csv").exists()


def test_tuning_under_the_2026_protocol_removes_a_false_positive_lesion():
    truth = np.zeros((48, 40, 40), np.uint8)
    truth[10:30, 10:30, 10:30] = 2
    truth[15:25, 15:25, 15:25] = 3
    noisy = truth.copy()
    noisy[40:43, 2:5, 2:5] = 2  # 27 voxels of spurious oedema: a false positive in SNFH and WT
    cases = [ValidationCase("a", noisy, truth, (1.0, 1.0, 1.0)), ValidationCase("b", truth.copy(), truth, (1.0, 1.0, 1.0))]
    before = BRATS2026.objective(panoptic_scores(noisy, truth, (1.0, 1.0, 1.0))[0])
    assert before["WT"][0] < 1.0 and before["RC"] == (1.0, 0.0)  # RC is empty in both maps: counted perfect
    result = tune_rules(cases, BRATS2026)
    assert result.rules.apply(noisy)[41, 3, 3] == 0
    assert result.after.per_region["WT"] == pytest.approx(1.0)
    assert result.before.per_region["WT"] < 0.9
    assert "panoptic quality" in result.provenance(BRATS2026)["objective"]
