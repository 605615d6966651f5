"""Cavities carved into real anatomy (gliomaseg synth --from): the host kept outside the carved region voxel
for voxel, fluid as each sequence shows it, labels as the 2024 protocol has them, nothing outside the brain."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from conftest import EXAMPLES
from gliomaseg.cli import app
from gliomaseg.data.carved_cavities import CARVE_JSON, WALL_MARGIN_MM, brain_mask, carve_cavity, carved_case_id
from gliomaseg.errors import InputError
from gliomaseg.io.cases import load_case, patient_id, read_case_folder
from gliomaseg.labels import MODALITIES
from gliomaseg.visualization.figures import save_figure
from gliomaseg.visualization.overlays import lesion_centre, sequences_figure

HOST = EXAMPLES / "TCGA-FG-6692"  # the bundled case with enhancing tissue and necrosis
DOCS = Path(__file__).resolve().parent.parent / "docs"
CHANNEL = {m: i for i, m in enumerate(MODALITIES)}


@pytest.fixture(scope="module")
def host():
    return load_case(read_case_folder(HOST))


@pytest.fixture(scope="module")
def carved(host):
    return [carve_cavity(host, seed=0, index=k) for k in (1, 2, 3)]


def test_the_host_is_kept_outside_the_carved_region_voxel_for_voxel(host, carved):
    for case in carved:
        outside = ~case.carved
        np.testing.assert_array_equal(case.image[:, outside], host.image[:, outside])
        np.testing.assert_array_equal(case.label[outside], host.label[outside])
        assert case.carved.any() and (case.image[:, case.carved] != host.image[:, case.carved]).any()


def test_nothing_is_carved_outside_the_brain_and_the_carved_region_is_cavity_or_residual_enhancement(host, carved):
    brain = brain_mask(host.image)
    depth = ndimage.distance_transform_edt(brain, sampling=host.spacing)
    for case in carved:
        assert (depth[case.carved] > WALL_MARGIN_MM).all()
        assert set(np.unique(case.label[case.carved])) <= {3, 4} and (case.label == 4).sum() > 0
        assert ((case.label == 4) <= case.carved).all()
        assert case.cavity_ml == pytest.approx((case.label == 4).sum() * np.prod(host.spacing) / 1000)
        # where the tumour core was: most of the cavity lies on the host's tumour
        assert (host.label[case.label == 4] > 0).mean() > 0.5


def test_a_tumour_at_the_brains_edge_is_carved_only_inside_the_brain():
    from gliomaseg.io.cases import LoadedCase

    rng = np.random.default_rng(0)
    grid = np.indices((70, 70, 70)) - 35
    inside = (grid ** 2).sum(axis=0) < 30 ** 2
    image = np.where(inside, rng.uniform(200, 400, (4, 70, 70, 70)), 0).astype(np.float32)
    label = np.zeros((70, 70, 70), np.uint8)
    label[(((grid - np.array([24, 0, 0])[:, None, None, None]) ** 2).sum(axis=0) < 8 ** 2) & inside] = 1  # a core reaching the edge
    case = LoadedCase("edge", image, label, np.eye(4), (1.0, 1.0, 1.0))
    depth = ndimage.distance_transform_edt(brain_mask(image))
    for k in range(4):
        carved = carve_cavity(case, seed=1, index=k)
        assert (depth[carved.carved] > WALL_MARGIN_MM).all() and carved.carved.any()


def test_the_cavity_is_filled_as_fluid_is_seen_on_each_sequence(host, carved):
    brain = brain_mask(host.image) & (host.label == 0)
    median = {m: np.median(host.image[c][brain]) for m, c in CHANNEL.items()}
    oedema_flair = np.median(host.image[CHANNEL["t2f"]][host.label == 2])
    host_et_t1c = np.median(host.image[CHANNEL["t1c"]][host.label == 3])
    for case in carved:
        interior = ndimage.binary_erosion(case.label == 4, iterations=2)
        if case.plan.blood_level:  # the settled blood is not fluid-like on T1 and T2: leave the lowest part out
            interior &= case.image[CHANNEL["t2w"]] > median["t2w"]
        mean = {m: case.image[c][interior].mean() for m, c in CHANNEL.items()}
        assert mean["t1n"] < 0.7 * median["t1n"] and mean["t1c"] < 0.7 * median["t1c"]  # dark on T1
        assert mean["t2w"] > np.percentile(host.image[CHANNEL["t2w"]][brain], 95)  # bright on T2
        assert mean["t2f"] < oedema_flair  # suppressed to intermediate on FLAIR, darker than oedema
        residual = case.carved & (case.label == 3)
        assert residual.any() == (case.plan.residual != "none")
        if residual.any():
            assert case.image[CHANNEL["t1c"]][residual].mean() == pytest.approx(host_et_t1c, rel=0.1)  # the host's enhancement


def test_carving_is_seeded_and_varied(host, carved):
    again = carve_cavity(host, seed=0, index=1)
    np.testing.assert_array_equal(again.image, carved[0].image)
    np.testing.assert_array_equal(again.label, carved[0].label)
    sizes = {round(c.cavity_ml, 1) for c in carved}
    assert len(sizes) == 3 and len({c.plan for c in carved}) == 3


def test_a_case_without_a_tumour_core_is_refused_in_one_line(host):
    from dataclasses import replace

    healthy = replace(host, label=np.where(host.label == 2, 2, 0).astype(np.uint8))
    with pytest.raises(InputError, match="no tumour core to resect"):
        carve_cavity(healthy, seed=0)


def test_synth_from_cases_writes_carved_cases_of_the_hosts_patients_and_skips_them_on_a_rerun(tmp_path):
    hosts = tmp_path / "hosts"
    shutil.copytree(HOST, hosts / HOST.name)
    shutil.copytree(EXAMPLES / "BraTS-GLI-00001-000", hosts / "BraTS-GLI-00001-000")  # no labels: skipped
    out = tmp_path / "carved"
    result = CliRunner().invoke(app, ["-q", "synth", "--from", str(hosts), "-o", str(out), "--per-case", "1", "--seed", "3"])
    assert result.exit_code == 0, result.output
    [folder] = sorted(out.iterdir())
    assert folder.name == carved_case_id(HOST.name, 1) == f"{HOST.name}-101" and patient_id(folder.name) == patient_id(HOST.name)
    case = load_case(read_case_folder(folder, require_seg=True))
    assert (case.label == 4).any() and (folder / CARVE_JSON).exists()
    written = (folder / f"{folder.name}-t2w.nii.gz").stat().st_mtime_ns
    assert CliRunner().invoke(app, ["-q", "synth", "--from", str(hosts), "-o", str(out), "--per-case", "1", "--seed", "3"]).exit_code == 0
    assert (folder / f"{folder.name}-t2w.nii.gz").stat().st_mtime_ns == written
    bad = CliRunner().invoke(app, ["-q", "synth", "--from", str(hosts / "BraTS-GLI-00001-000"), "-o", str(tmp_path / "none")])
    assert bad.exit_code == 1 and "no labelled case" in bad.output


def test_the_docs_picture_of_carved_cases(host, carved, tmp_path):
    rows = [("host (pre-operative)", host.image, host.label)] + [(f"carved, seed 0, k={k}", c.image, c.label)
                                                                 for k, c in zip((1, 2, 3), carved)]
    picture = save_figure(sequences_figure(rows, lesion_centre(carved[0].label == 4)), tmp_path / "carved.png")
    assert picture.stat().st_size > 50_000
    if os.environ.get("GLIOMASEG_UPDATE_SCREENSHOTS"):  # how docs/carved-cavities.png is made
        shutil.copyfile(picture, DOCS / "carved-cavities.png")
