"""Synthetic data is deterministic and plausible; splits never separate a patient's timepoints."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from gliomaseg.cli import app
from gliomaseg.data.splits import kfold_by_patient, split_by_patient
from gliomaseg.io.cases import discover_cases, load_case, patient_id
from gliomaseg.labels import MODALITIES


def test_synth_is_deterministic_and_has_bratslayout(tmp_path):
    for name in ("a", "b"):
        result = CliRunner().invoke(app, ["-q", "synth", str(tmp_path / name), "--cases", "3", "--seed", "7", "--shape", "64", "72", "60"])
        assert result.exit_code == 0, result.output
    cases_a, cases_b = discover_cases(tmp_path / "a", require_seg=True), discover_cases(tmp_path / "b", require_seg=True)
    assert [c.case_id for c in cases_a] == [c.case_id for c in cases_b]
    assert {patient_id(c.case_id) for c in cases_a} == {"BraTS-GLI-97000", "BraTS-GLI-97001"}
    for case_a, case_b in zip(cases_a, cases_b):
        a, b = load_case(case_a), load_case(case_b)
        assert a.image.shape == (len(MODALITIES), 64, 72, 60)
        assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)


def test_synthetic_contrast_matches_tissue_physics(synthetic_dir):
    t1n, t1c, t2w, t2f = range(4)
    means = {}
    for case in discover_cases(synthetic_dir):
        loaded = load_case(case)
        for label in (1, 2, 3, 4):
            mask = loaded.label == label
            if mask.sum() > 30:
                means.setdefault(label, []).append(loaded.image[:, mask].mean(axis=1) / loaded.image[:, loaded.image[0] > 0].mean(axis=1))
    assert set(means) >= {1, 2, 3}
    snfh, et = np.mean(means[2], axis=0), np.mean(means[3], axis=0)
    assert snfh[t2f] > 1.2  # oedema bright on FLAIR
    assert et[t1c] > 1.3 * et[t1n]  # enhancement bright on T1c only
    if 4 in means:
        rc = np.mean(means[4], axis=0)
        assert rc[t2w] > 1.2 and rc[t2f] < 0.6 and rc[t1n] < 0.5  # fluid cavity


def test_split_by_patient_keeps_timepoints_together():
    ids = [f"BraTS-GLI-{p:05d}-{t:03d}" for p in range(20) for t in range(p % 3 + 1)]
    split = split_by_patient(ids, 0.2, seed=1)
    assert split == split_by_patient(ids, 0.2, seed=1)
    assert not {patient_id(c) for c in split["train"]} & {patient_id(c) for c in split["val"]}
    assert sorted(split["train"] + split["val"]) == sorted(ids)
    assert len({patient_id(c) for c in split["val"]}) == 4
    folds = kfold_by_patient(ids, 5, seed=1)
    assert sorted(c for f in folds for c in f["val"]) == sorted(ids)
    for fold in folds:
        assert not {patient_id(c) for c in fold["train"]} & {patient_id(c) for c in fold["val"]}


def test_split_blocks_hold_out_every_patient_once():
    ids = [f"BraTS-GLI-{p:05d}-{t:03d}" for p in range(10) for t in range(p % 2 + 1)]
    blocks = [split_by_patient(ids, 0.3, seed=0, block=b) for b in range(4)]  # 3 + 3 + 3 + 1 patients
    assert blocks[0] == split_by_patient(ids, 0.3, seed=0)
    assert [len({patient_id(c) for c in b["val"]}) for b in blocks] == [3, 3, 3, 1]
    assert sorted(c for b in blocks for c in b["val"]) == sorted(ids)
    for b in blocks:
        assert not {patient_id(c) for c in b["train"]} & {patient_id(c) for c in b["val"]}
    with pytest.raises(ValueError, match="block 4"):
        split_by_patient(ids, 0.3, seed=0, block=4)
