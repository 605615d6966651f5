"""Post-processing rules: what they erase or relabel, how they are tuned, and where train/predict use them."""

from __future__ import annotations

import json
import re
import shutil

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import EXAMPLES
from gliomaseg.cli import app
from gliomaseg.errors import InputError
from gliomaseg.evaluation.protocol import OFFICIAL
from gliomaseg.io.nifti import load_label_map, save_label_map
from gliomaseg.postprocessing.apply import apply_rules
from gliomaseg.model.run_folder import RunFolder
from gliomaseg.postprocessing.rules import PostprocessRules, load_rules, save_rules
from gliomaseg.postprocessing.tuning import ValidationCase, score_rules, starting_rules, tune_rules


def _tumour() -> np.ndarray:
    """A 48^3 map with one big tumour (oedema around a core with an enhancing part) and a cavity."""
    labels = np.zeros((48, 48, 48), np.uint8)
    labels[5:25, 5:25, 5:25] = 2
    labels[9:21, 9:21, 9:21] = 1
    labels[12:18, 12:18, 12:18] = 3
    labels[30:42, 30:42, 30:42] = 4
    return labels


def test_no_rules_change_nothing():
    labels = _tumour()
    assert not PostprocessRules().changes_anything
    assert np.array_equal(PostprocessRules().apply(labels), labels)


def test_small_tumour_components_are_erased_and_the_input_left_alone():
    truth = _tumour()
    noisy = truth.copy()
    noisy[40:43, 2:5, 2:5] = 2  # 27 voxels of spurious oedema
    noisy[2:4, 40:42, 2:4] = 3  # 8 voxels of spurious enhancement
    cleaned = PostprocessRules(tumour_min_voxels=50).apply(noisy)
    assert np.array_equal(cleaned, truth)
    assert noisy[41, 3, 3] == 2  # the input is a copy's source, not changed
    assert np.array_equal(PostprocessRules(tumour_min_voxels=20).apply(noisy)[40:43, 2:5, 2:5], noisy[40:43, 2:5, 2:5])


def test_only_the_largest_tumours_are_kept():
    labels = _tumour()
    labels[30:40, 2:12, 30:40] = 2  # a second, smaller tumour (1000 voxels)
    assert np.array_equal(PostprocessRules(tumour_keep_largest=1).apply(labels), _tumour())
    assert np.array_equal(PostprocessRules(tumour_keep_largest=2).apply(labels), labels)


def test_small_enhancing_components_become_core_and_small_cavities_go():
    labels = _tumour()
    labels[10, 10, 10] = 3  # a one-voxel speck of enhancement inside the core
    labels[44:46, 2:4, 44:46] = 4  # an 8-voxel cavity
    cleaned = PostprocessRules(et_min_voxels=10, rc_min_voxels=10).apply(labels)
    assert cleaned[10, 10, 10] == 1
    assert np.array_equal(cleaned, _tumour())  # the big enhancing part and cavity stay


def test_holes_in_the_core_become_core_but_a_cavity_inside_it_stays():
    labels = _tumour()
    labels[14:16, 14:16, 10:12] = 0  # a gap enclosed by core
    labels[11:13, 11:13, 16:18] = 2  # oedema enclosed by core
    labels[14:16, 14:16, 14:16] = 4  # a cavity inside the enhancing part
    filled = PostprocessRules(fill_core_holes=1).apply(labels)
    assert (filled[14:16, 14:16, 10:12] == 1).all() and (filled[11:13, 11:13, 16:18] == 1).all()
    assert (filled[14:16, 14:16, 14:16] == 4).all()
    changed = filled != labels
    assert changed.sum() == 16  # nothing else: oedema around the core is not enclosed by it
    assert not PostprocessRules(fill_core_holes=0).apply(labels).__ne__(labels).any()


def test_cavities_no_tumour_comes_near_are_erased_and_the_others_stay():
    """Reach: a tumour label within CAVITY_REACH (2) steps to any of the 26 neighbours keeps a cavity; the oedema ends at 24."""
    labels = _tumour()  # its cavity (30:42 on every axis) is far from the tumour
    labels[26:29, 10:14, 10:14] = 4  # one background voxel (x = 25) between it and the oedema: kept
    labels[10:14, 27:30, 10:14] = 4  # two background voxels (y = 25, 26) between: erased
    labels[2:5, 2:5, 2:5] = 4  # touching the oedema's corner diagonally: kept
    cleaned = PostprocessRules(rc_needs_tumour=1).apply(labels)
    assert (cleaned[26:29, 10:14, 10:14] == 4).all() and (cleaned[2:5, 2:5, 2:5] == 4).all()
    assert not (cleaned[10:14, 27:30, 10:14] == 4).any() and not (cleaned[30:42, 30:42, 30:42] == 4).any()
    assert np.array_equal(cleaned[labels != 4], labels[labels != 4])  # only cavities change, and only to background
    assert set(np.unique(cleaned[(labels == 4) & (cleaned != 4)])) == {0}
    only_cavity = np.zeros_like(labels)
    only_cavity[30:42, 30:42, 30:42] = 4
    assert not PostprocessRules(rc_needs_tumour=1).apply(only_cavity).any()  # no tumour anywhere: nothing vouches for it


def test_rules_files_round_trip_and_bad_ones_are_refused(tmp_path):
    rules = PostprocessRules(tumour_min_voxels=250, et_min_voxels=25)
    path = save_rules(rules, tmp_path / "rules.json", {"cases": 3})
    assert load_rules(path) == rules
    assert json.loads(path.read_text())["tuned_on"] == {"cases": 3}
    for text, message in [('{"rules": {"tumor_min": 3}}', "unknown post-processing rule(s): tumor_min"),
                          ('{"rules": {"et_min_voxels": -1}}', "must be whole numbers >= 0"),
                          ('{"rules": {"fill_core_holes": 2}}', "must be 0 (off) or 1 (on)"),
                          ('{"rules": {"rc_needs_tumour": 3}}', "rule(s) rc_needs_tumour must be 0 (off) or 1 (on)"),
                          ('{"rules": [', "not valid JSON"), ('{"tumour_min_voxels": 3}', 'expected {"rules"')]:
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(InputError, match=re.escape(message)):
            load_rules(tmp_path / "bad.json")


def test_tuning_finds_the_rule_that_removes_spurious_lesions():
    truth = _tumour()
    noisy = truth.copy()
    noisy[40:44, 2:6, 2:6] = 2  # 64 voxels of spurious oedema: one false-positive WT and SNFH lesion
    cases = [ValidationCase("a", noisy, truth, (1.0, 1.0, 1.0)), ValidationCase("b", truth.copy(), truth, (1.0, 1.0, 1.0))]
    result = tune_rules(cases)
    assert result.rules.apply(noisy)[41, 3, 3] == 0
    assert result.after.per_region["WT"] == pytest.approx(1.0)
    assert result.before.per_region["WT"] < 0.9
    assert result.after == score_rules(cases, result.rules)
    clean = tune_rules([ValidationCase("b", truth.copy(), truth, (1.0, 1.0, 1.0))])
    assert clean.rules == PostprocessRules()  # nothing to gain: every rule stays off


def test_tuning_keeps_its_starting_rules_unless_the_cases_ask_otherwise():
    truth = _tumour()
    clean = [ValidationCase("b", truth.copy(), truth, (1.0, 1.0, 1.0))]
    start = PostprocessRules(tumour_min_voxels=1000)
    kept = tune_rules(clean, start=start)
    assert kept.rules == start  # nothing asks for another value: the start stays
    assert kept.provenance(OFFICIAL)["started_from"]["tumour_min_voxels"] == 1000
    satellite = truth.copy()
    satellite[40:47, 2:9, 2:9] = 2  # a true 343-voxel lesion, which the start would erase
    found = [ValidationCase("c", satellite.copy(), satellite, (1.0, 1.0, 1.0))]
    assert start.apply(satellite)[43, 5, 5] == 0
    moved = tune_rules(found, start=start)
    assert moved.rules.tumour_min_voxels <= 250 and moved.rules.apply(satellite)[43, 5, 5] == 2
    assert moved.before.per_region["WT"] == pytest.approx(1.0)  # "before" is the raw prediction's score
    assert moved.after == score_rules(found, moved.rules)


def test_tuning_does_not_leave_its_start_for_a_trimmed_edge():
    truth = _tumour()
    truth[27:30, 10:13, 10:13] = 2  # a true 27-voxel fragment 2 voxels off the tumour: part of its lesion
    cases = [ValidationCase("a", truth.copy(), truth, (1.0, 1.0, 1.0))]
    start = PostprocessRules(tumour_min_voxels=1000)
    loss = score_rules(cases, PostprocessRules()).dice - score_rules(cases, start).dice
    assert 0 < loss < 0.01  # erasing the fragment trims the lesion a little; it loses no lesion
    assert tune_rules(cases, start=start).rules == start
    assert tune_rules(cases, start=start, min_gain_lesions=0).rules.tumour_min_voxels < 27  # any loss used to move it


def test_a_gain_that_one_case_carries_does_not_move_a_rule_that_asks_for_support():
    truth = _tumour()
    truth[2:5, 2:5, 40:43] = 3  # a true 27-voxel enhancing focus away from the tumour, which the start makes core
    start = PostprocessRules(et_min_voxels=100)
    assert start.apply(truth)[3, 3, 41] == 1 and start.apply(truth)[15, 15, 15] == 3  # the 216-voxel one stays
    one = [ValidationCase("a", truth.copy(), truth, (1.0, 1.0, 1.0))] + [
        ValidationCase(f"clean{i}", _tumour(), _tumour(), (1.0, 1.0, 1.0)) for i in range(9)]
    assert tune_rules(one, start=start).rules.et_min_voxels <= 25  # without support, one case moves it
    assert tune_rules(one, start=start, min_support=0.95).rules == start  # absent from a third of the resamples
    shared = [ValidationCase(f"focus{i}", truth.copy(), truth, (1.0, 1.0, 1.0)) for i in range(8)] + one[1:3]
    assert tune_rules(shared, start=start, min_support=0.95).rules.et_min_voxels <= 25  # most cases gain: it moves


def test_a_runs_starting_rules_follow_its_grid():
    # one network voxel of the cpu preset (64^3) covers ~13 native voxels of a BraTS brain, of the recipe (160^3) ~0.85
    assert starting_rules(13.0) == PostprocessRules(tumour_min_voxels=1000, et_min_voxels=250, rc_min_voxels=1000)
    assert starting_rules(0.85) == PostprocessRules(tumour_min_voxels=50, et_min_voxels=50, rc_min_voxels=50)
    assert starting_rules(0.4) == PostprocessRules(tumour_min_voxels=25, et_min_voxels=25)  # no cavity grid value under 32
    assert starting_rules(0.2) == PostprocessRules(et_min_voxels=10)


def test_train_tunes_rules_for_its_best_checkpoint_and_the_cli_tunes_too(trained_run, synthetic_dir, tmp_path):
    saved = json.loads((trained_run / RunFolder.RULES).read_text())
    split = json.loads((trained_run / "split.json").read_text())
    assert saved["tuned_on"]["checkpoint"] == "best.pt"
    assert saved["tuned_on"]["cases"] == len(split["val"])
    assert saved["tuned_on"]["dice_after"] >= saved["tuned_on"]["dice_before"]
    assert load_rules(trained_run / RunFolder.RULES) == PostprocessRules.from_dict(saved["rules"])
    out = tmp_path / "rules.json"
    result = CliRunner().invoke(app, ["-q", "postprocess", "tune", "--pred", str(trained_run / "validation"),
                                      "--gt", str(synthetic_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    tuned = json.loads(out.read_text())["tuned_on"]
    assert tuned["cases"] == len(split["val"]) and tuned["dice_after"] >= tuned["dice_before"]
    assert "min_support" not in tuned
    supported = tmp_path / "supported.json"
    result = CliRunner().invoke(app, ["-q", "postprocess", "tune", str(trained_run / "validation"), str(synthetic_dir),
                                      "--out", str(supported), "--min-support", "0.95"])
    assert result.exit_code == 0, result.output
    assert json.loads(supported.read_text())["tuned_on"]["min_support"] == 0.95
    refused = CliRunner().invoke(app, ["postprocess", "tune", str(trained_run / "validation"), str(synthetic_dir),
                                       "--out", str(tmp_path / "never.json"), "--min-support", "1.5"])
    assert refused.exit_code != 0 and "min-support" in refused.output and not (tmp_path / "never.json").exists()


def test_predict_applies_the_runs_rules_unless_told_not_to(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("cache", "tensorboard", "validation"))
    erase_all = PostprocessRules(tumour_min_voxels=10**9, rc_min_voxels=10**9)
    save_rules(erase_all, run / RunFolder.RULES)
    raw, cleaned, applied = tmp_path / "raw", tmp_path / "cleaned", tmp_path / "applied"
    runner = CliRunner()
    assert runner.invoke(app, ["-q", "predict", str(EXAMPLES), str(raw), "--model", str(run), "--no-postprocess"]).exit_code == 0
    assert runner.invoke(app, ["-q", "predict", str(EXAMPLES), str(cleaned), "--model", str(run)]).exit_code == 0
    result = runner.invoke(app, ["-q", "postprocess", "apply", str(run / RunFolder.RULES), "--pred", str(raw), "--out", str(applied)])
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in raw.iterdir())
    assert files and files == sorted(p.name for p in cleaned.iterdir()) == sorted(p.name for p in applied.iterdir())
    assert any(load_label_map(raw / name).data.any() for name in files)  # the raw model predicts something
    for name in files:
        assert not load_label_map(cleaned / name).data.any()
        assert np.array_equal(load_label_map(applied / name).data, load_label_map(cleaned / name).data)
        assert np.allclose(load_label_map(applied / name).affine, load_label_map(raw / name).affine)


def test_apply_refuses_bad_rules_and_its_own_input_folder(tmp_path):
    pred = tmp_path / "pred"
    save_label_map(_tumour(), np.eye(4), pred / "case.nii.gz")
    (tmp_path / "bad.json").write_text('{"rules": {"size": 1}}')
    runner = CliRunner()
    result = runner.invoke(app, ["-q", "postprocess", "apply", str(tmp_path / "bad.json"), "--pred", str(pred), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {tmp_path / 'bad.json'}: unknown post-processing rule(s): size (known: " \
                                    "et_min_voxels, fill_core_holes, rc_min_voxels, rc_needs_tumour, tumour_keep_largest, tumour_min_voxels)"
    assert not (tmp_path / "o").exists()
    save_rules(PostprocessRules(tumour_min_voxels=5), tmp_path / "rules.json")
    result = runner.invoke(app, ["-q", "postprocess", "apply", str(tmp_path / "rules.json"), "--pred", str(pred), "--out", str(pred)])
    assert result.exit_code == 1 and "must not be the input folder" in result.output


def test_apply_keeps_the_input_header_matrices_and_codes(tmp_path):
    """A qform-only map (sform_code 0, as some converters write) stays qform-only and in place."""
    pred = tmp_path / "pred"
    pred.mkdir()
    affine = np.array([[-1.0, 0, 0, 90], [0, 1, 0, -126], [0, 0, 1, -72], [0, 0, 0, 1]])
    image = nib.Nifti1Image(_tumour(), None)
    image.header.set_qform(affine, 1)
    image.header.set_sform(np.eye(4), 0)
    nib.save(image, str(pred / "case.nii.gz"))
    apply_rules(PostprocessRules(tumour_min_voxels=5), pred, tmp_path / "out", quiet=True)
    written = nib.load(tmp_path / "out" / "case.nii.gz").header
    assert (int(written["qform_code"]), int(written["sform_code"])) == (1, 0)
    np.testing.assert_allclose(written.get_qform(), affine)
    np.testing.assert_allclose(written.get_best_affine(), affine)
