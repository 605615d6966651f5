"""Our lesion-wise metrics against the official BraTS 2024 code's recorded output."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import METRIC_FIXTURES, evaluate_folders
from gliomaseg.cli import app
from gliomaseg.evaluation.evaluate import CasePair, score_pair
from gliomaseg.evaluation.lesion_wise import REGION_COLUMNS
from gliomaseg.evaluation.protocol import CORRECTED, OFFICIAL
from gliomaseg.io.nifti import load_label_map
from gliomaseg.labels import REGIONS

EXPECTED = json.loads((METRIC_FIXTURES / "expected-official.json").read_text())
PAIRS = list(csv.DictReader((METRIC_FIXTURES / "pairs.csv").open()))
COUNTS = {"Num_TP", "Num_FP", "Num_FN"}


def _number(value) -> float:
    return float(value) if not isinstance(value, str) else float(value.replace("Infinity", "inf"))


def _assert_close(ours: float, official, what: str) -> None:
    expected = _number(official)
    if math.isnan(expected):
        assert math.isnan(ours), what
    else:
        assert ours == pytest.approx(expected, abs=1e-6, rel=0), f"{what}: ours {ours}, official {expected}"


@pytest.mark.parametrize("pair", PAIRS, ids=[p["case_id"] for p in PAIRS])
def test_every_column_and_lesion_matches_official(pair):
    case_id = pair["case_id"]
    result = score_pair(CasePair(case_id, METRIC_FIXTURES / pair["pred_path"], METRIC_FIXTURES / pair["gt_path"]))
    expected = EXPECTED[case_id]
    for region in REGIONS:
        for column in REGION_COLUMNS:
            official = expected["regions"][region][column]
            ours = result.regions[region][column]
            if column in COUNTS:
                assert ours == official, f"{case_id} {region} {column}"
            else:
                _assert_close(ours, official, f"{case_id} {region} {column}")
    ours_lesions = result.lesions
    assert len(ours_lesions) == len(expected["lesions"])
    for ours, official in zip(ours_lesions, expected["lesions"]):
        where = f"{case_id} {official['Label']} lesion {official['gt_lesion_numbers']}"
        assert (ours.region, ours.gt_lesion) == (official["Label"], official["gt_lesion_numbers"]), where
        assert list(ours.pred_lesions) == official["predicted_lesion_numbers"], where
        for attr, key in (("gt_volume_mm3", "gt_lesion_vol"), ("dice", "dice_lesionwise"), ("hd95", "hd95_lesionwise"),
                          ("nsd_05", "nsd05_lesionwise"), ("nsd_10", "nsd10_lesionwise")):
            _assert_close(getattr(ours, attr), official[key], f"{where} {attr}")


def test_cli_writes_official_table_for_a_folder(tmp_path):
    chosen = [p for p in PAIRS if p["case_id"].startswith(("syn-0001", "edge-empty-gt", "real-TCGA-FG-6692-isen-20-rc"))]
    result, out, lesions, summary = evaluate_folders(tmp_path, [(METRIC_FIXTURES, p) for p in chosen], "--workers", "2")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == len(chosen) * len(REGIONS)
    assert list(rows[0])[:2] == ["case_id", "region"] and list(rows[0])[2:] == list(REGION_COLUMNS)
    for row in rows:
        official = EXPECTED[row["case_id"]]["regions"][row["region"]]
        for column in REGION_COLUMNS:
            _assert_close(float(row[column]), official[column], f"{row['case_id']} {row['region']} {column}")
    assert sum(1 for _ in csv.DictReader(lesions.open())) == sum(len(EXPECTED[p["case_id"]]["lesions"]) for p in chosen)
    assert "LesionWise_Score_Dice" in summary.read_text()
    assert "WT" in result.output


def test_missing_prediction_is_an_error_unless_scored_empty(tmp_path):
    gt_dir = tmp_path / "gt" / "case-a"
    gt_dir.mkdir(parents=True)
    (gt_dir / "case-a-seg.nii.gz").write_bytes((METRIC_FIXTURES / "syn-0000" / "gt.nii.gz").read_bytes())
    (tmp_path / "pred").mkdir()
    out = tmp_path / "out.csv"
    args = ["-q", "evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--out", str(out)]
    failed = CliRunner().invoke(app, args)
    assert failed.exit_code == 1 and "case-a.nii.gz: prediction missing" in failed.output
    assert not out.exists()
    scored = CliRunner().invoke(app, [*args, "--missing", "empty"])
    assert scored.exit_code == 0, scored.output
    wt = next(r for r in csv.DictReader(out.open()) if r["region"] == "WT")
    assert float(wt["LesionWise_Score_Dice"]) == 0.0 and float(wt["LesionWise_Score_HD95"]) == 337.0


def test_corrected_protocol_uses_binary_masks_for_sensitivity():
    pair = next(p for p in PAIRS if p["case_id"] == "syn-0000")
    import nibabel as nib

    pred = np.asanyarray(nib.load(METRIC_FIXTURES / pair["pred_path"]).dataobj)
    gt = np.asanyarray(nib.load(METRIC_FIXTURES / pair["gt_path"]).dataobj)
    official, _ = OFFICIAL.score(pred, gt, (1.0, 1.0, 1.0))
    corrected, _ = CORRECTED.score(pred, gt, (1.0, 1.0, 1.0))
    p, g = np.isin(pred, REGIONS["WT"]), np.isin(gt, REGIONS["WT"])
    assert corrected["WT"]["Sensitivity"] == pytest.approx((p & g).sum() / g.sum())
    # the official number for this pair is 0.0: only lesion number 1 in both maps counts as a hit
    assert official["WT"]["Sensitivity"] == 0.0
    assert corrected["WT"]["Legacy_Dice"] == official["WT"]["Legacy_Dice"]


@pytest.mark.parametrize("pair", PAIRS, ids=[p["case_id"] for p in PAIRS])
def test_the_objective_alone_equals_the_official_lesion_wise_dice_and_hd95(pair):
    """What tuning and validation optimise, computed without the columns they never read, is the official number."""
    case_id = pair["case_id"]
    prediction, truth = load_label_map(METRIC_FIXTURES / pair["pred_path"]), load_label_map(METRIC_FIXTURES / pair["gt_path"])
    for protocol in (OFFICIAL, CORRECTED):
        objective = protocol.objective_scores(prediction.data, truth.data, truth.spacing)
        for region in REGIONS:
            official = EXPECTED[case_id]["regions"][region]
            if protocol is OFFICIAL:
                _assert_close(objective[region][0], official["LesionWise_Score_Dice"], f"{case_id} {region} Dice")
                _assert_close(objective[region][1], official["LesionWise_Score_HD95"], f"{case_id} {region} HD95")
        assert objective == protocol.objective(protocol.score(prediction.data, truth.data, truth.spacing)[0])
