"""torchrun with two CPU processes (gloo) trains the same weights as one process with the same global batch."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from gliomaseg.cli import app
from gliomaseg.config import PreprocessConfig
from gliomaseg.data.splits import split_by_patient
from gliomaseg.preprocessing.cache import cached_case_ids, preprocess_dataset
from gliomaseg.model.checkpoint import load_checkpoint
from gliomaseg.config import TrainConfig
from gliomaseg.model.networks import network_for


def test_two_process_ddp_matches_single_process(tmp_path, synthetic_dir):
    cache = tmp_path / "cache"
    preprocess_dataset(synthetic_dir, cache, PreprocessConfig(size=(32, 32, 32)), quiet=True)
    # a seed whose patient-wise split leaves an even number of training cases, so both runs see whole batches
    seed = next(s for s in range(20) if len(split_by_patient(cached_case_ids(cache), 0.25, s)["train"]) % 2 == 0)
    # Instance-normalised DynUNet (BatchNorm networks would need SyncBatchNorm, which has no CPU
    # implementation), no dropout, no augmentation: nothing differs but the process layout. The
    # loss's batch Dice is summed over both processes, so it is the global batch's Dice.
    # SGD rather than Adam: Adam's first steps move every weight by about +-lr whatever the gradient's
    # size, so float noise in near-zero gradients would flip whole steps and hide what is compared.
    common = [str(cache), "--size", "32", "--epochs", "2", "--model", "dynunet", "--dropout", "0", "--no-augment",
              "--repeats", "1", "--val-every", "1", "--val-fraction", "0.25", "--seed", str(seed), "--device", "cpu",
              "--workers", "0", "--optimizer", "sgd", "--lr", "0.01"]
    single = CliRunner().invoke(app, ["-q", "train", *common, "--out", str(tmp_path / "single"), "--batch-size", "2"])
    assert single.exit_code == 0, single.output

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "gliomaseg", "-q", "train",
         *common, "--out", str(tmp_path / "ddp"), "--batch-size", "1"],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]

    a = load_checkpoint(tmp_path / "single" / "last.pt")
    b = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    torch.manual_seed(seed)
    initial = network_for(TrainConfig(model="dynunet")).state_dict()
    moved = max((a["model"][k] - initial[k]).abs().max().item() for k in initial)
    assert moved > 1e-3  # training did change the weights, so matching them means something
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-4, atol=1e-5, msg=key)
    # validation was split across the two ranks and gathered: the same numbers as one process
    # (up to voxels that float-level weight differences flip at an argmax boundary)
    single_rows = list(csv.DictReader((tmp_path / "single" / "metrics.csv").open()))
    ddp_rows = list(csv.DictReader((tmp_path / "ddp" / "metrics.csv").open()))
    assert len(single_rows) == len(ddp_rows) == 2
    for one, two in zip(single_rows, ddp_rows):
        # float-level: oneDNN sums in another order for batch 1 than for batch 2 (as the weights above)
        assert float(one["train_loss"]) == pytest.approx(float(two["train_loss"]), rel=1e-4)
        for column in (c for c in one if c.startswith("val_score_")):
            assert float(one[column]) == pytest.approx(float(two[column]), abs=2e-3), column


def test_batchnorm_network_under_cpu_torchrun_says_its_statistics_are_per_process(tmp_path, synthetic_dir):
    cache = tmp_path / "cache"
    preprocess_dataset(synthetic_dir, cache, PreprocessConfig(size=(32, 32, 32)), quiet=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "gliomaseg", "train",
         str(cache), "--out", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "1", "--repeats", "1",
         "--device", "cpu", "--workers", "0"],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stderr.count("BatchNorm statistics are per process: SyncBatchNorm needs GPUs") == 1  # rank 0 says it, once
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1
