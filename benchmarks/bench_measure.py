"""Time ``gliomaseg measure`` per exam on real tumour shapes, on the BraTS grid and on a clinical 2D grid.

Run: ``.venv/bin/python benchmarks/bench_measure.py [--data ../shared/real-brats]``. The exams are the
expert label maps of the real cases (bundled ones when ``--data`` is absent), each measured as it is
(1 mm, 240x240x155) and resampled by nearest neighbour onto 0.9 x 0.9 x 4 mm voxels, as a 2D
clinical series would hold it. Per exam: reading the label map alone (the floor no measurement can
go under, timed in the same run) and reading plus measuring (volumes, every enhancing lesion's two
diameters); median of 3 repeats, one process. Writes ``benchmarks/results/measure.json`` and ``measure.md``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from common import median_seconds, peak_rss_gb, write_results

from gliomaseg.io.nifti import load_label_map
from gliomaseg.measurement.measure import measure_exam

ROOT = Path(__file__).resolve().parent.parent
CLINICAL_SPACING = (0.9, 0.9, 4.0)
REPEATS = 3


def _on_clinical_grid(seg: Path, out: Path) -> Path:
    """The label map resampled (nearest neighbour) onto 0.9 x 0.9 x 4 mm voxels over the same field of view."""
    image = nib.load(str(seg))
    spacing = np.asarray(image.header.get_zooms()[:3], float)
    zoom = spacing / CLINICAL_SPACING
    labels = ndimage.zoom(np.asarray(image.dataobj).astype(np.uint8), zoom, order=0)
    affine = image.affine.copy()
    affine[:3, :3] = image.affine[:3, :3] / spacing * CLINICAL_SPACING
    nib.save(nib.Nifti1Image(labels, affine), str(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "real-brats")
    args = parser.parse_args()
    data = args.data if args.data.is_dir() else ROOT / "examples" / "data"
    segs = sorted(data.glob("*/*-seg.nii.gz"))
    if not segs:
        sys.exit(f"no label maps under {data}")
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for seg in segs:
            exam = seg.parent.name
            for grid, path in (("1 mm", seg), ("0.9x0.9x4 mm", _on_clinical_grid(seg, Path(work) / f"{exam}.nii.gz"))):
                read = median_seconds(lambda: load_label_map(path), REPEATS)
                measured = measure_exam(exam, path)
                total = median_seconds(lambda: measure_exam(exam, path), REPEATS)
                rows.append({"exam": exam, "grid": grid, "shape": list(measured.shape), "read_s": round(read, 4),
                             "measure_s": round(total, 4), "enhancing_lesions": len(measured.lesions),
                             "measurable_lesions": len(measured.measurable), "sum_of_products_mm2": measured.sum_of_products_mm2})
    table = ["| grid | exams | median s/exam (read + measure) | max s/exam | median s (read alone) | median measure / read |",
             "|---|---|---|---|---|---|"]
    headline = {}
    for grid, key in (("1 mm", "median_s_per_exam_1mm"), ("0.9x0.9x4 mm", "median_s_per_exam_0.9x0.9x4mm")):
        chosen = [r for r in rows if r["grid"] == grid]
        median = statistics.median(r["measure_s"] for r in chosen)
        ratio = statistics.median(r["measure_s"] / r["read_s"] for r in chosen)
        table.append(f"| {grid} | {len(chosen)} | {median:.3f} | {max(r['measure_s'] for r in chosen):.3f} | "
                     f"{statistics.median(r['read_s'] for r in chosen):.3f} | {ratio:.1f}x |")
        headline[key] = round(median, 3)
    lesions = sum(r["enhancing_lesions"] for r in rows if r["grid"] == "1 mm")
    table += ["", f"{len(segs)} expert label maps from {data.name}/ ({lesions} enhancing lesions at 1 mm), one process, median of "
              f"{REPEATS} repeats; peak RSS {peak_rss_gb():.2f} GB. The goal is at most 1 s per exam on 2 cores."]
    write_results("measure", headline, {"data": data.name, "repeats": REPEATS, "rows": rows}, table)


if __name__ == "__main__":
    main()
