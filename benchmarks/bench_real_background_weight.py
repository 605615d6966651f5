"""Would a lower bar for "tumour" rescue the real cases the CPU preset under-segments?

Run: ``.venv/bin/python benchmarks/bench_real_background_weight.py WORK [WORK ...] [--weights 1 0.8 0.6 0.45 0.3]``
where each WORK is a folder ``bench_real.py --work WORK`` kept (its ``run/`` and ``held_out/``).
Each run predicts its own held-out cases once (native-grid probabilities, no TTA); for every
weight the background probability is multiplied by it before the argmax, whole-tumour components
under ``--tumour-min-voxels`` are erased (the preset's starting rule), and the map is scored with
the official 2024 lesion-wise protocol. Writes ``results/real_background_weight.{json,md}``; the
last stdout line is one JSON object: pooled lesion-wise Dice per region for each weight.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from common import write_results

from gliomaseg.evaluation.protocol import OFFICIAL
from gliomaseg.inference.predictor import load_model, native_probabilities
from gliomaseg.io.cases import find_case_folders, load_case, read_case_folder
from gliomaseg.labels import REGIONS as ALL_REGIONS
from gliomaseg.postprocessing.rules import PostprocessRules

REGIONS = tuple(r for r in ALL_REGIONS if r != "RC")  # pre-operative cases: RC is 1 whenever no cavity is predicted


def weighted_labels(probabilities: np.ndarray, background_weight: float) -> np.ndarray:
    """Argmax of the label probabilities after scaling the background's (channel 0)."""
    scaled = probabilities.copy()
    scaled[0] *= background_weight
    return scaled.argmax(0).astype(np.uint8)


def score_work(work: Path, weights: list[float], rules: PostprocessRules) -> dict[str, dict[str, dict[str, float]]]:
    """{case: {weight: {region: lesion-wise Dice}}} for one kept bench_real run."""
    model = load_model(work / "run", device="cpu", postprocess=False)
    if model.config.train.targets != "labels":
        raise SystemExit(f"{work / 'run'}: trained with {model.config.train.targets} targets; this sweep needs label targets")
    scores = {}
    for folder in find_case_folders(work / "held_out"):
        case = load_case(read_case_folder(folder, require_seg=True))
        probabilities = native_probabilities(model, case).numpy()
        scores[case.case_id] = {}
        for weight in weights:
            rows, _ = OFFICIAL.score(rules.apply(weighted_labels(probabilities, weight)), case.label, case.spacing)
            scores[case.case_id][str(weight)] = {r: float(rows[r]["LesionWise_Score_Dice"]) for r in REGIONS}
        print(folder.name, "done", flush=True)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path, nargs="+", help="folders kept by bench_real.py --work")
    parser.add_argument("--weights", type=float, nargs="+", default=[1.0, 0.8, 0.6, 0.45, 0.3])
    parser.add_argument("--tumour-min-voxels", type=int, default=1000)
    args = parser.parse_args()
    rules = PostprocessRules(tumour_min_voxels=args.tumour_min_voxels)
    per_case: dict[str, dict[str, dict[str, float]]] = {}
    for work in args.work:
        per_case.update(score_work(work, args.weights, rules))
    pooled = {str(w): {r: float(np.mean([per_case[c][str(w)][r] for c in per_case])) for r in REGIONS} for w in args.weights}
    table = [
        f"{len(per_case)} held-out real cases, each predicted by the bench_real.py run that never saw it "
        f"({', '.join(str(w) for w in args.work)}); background probability x weight before the argmax, whole-tumour "
        f"components under {args.tumour_min_voxels} voxels erased; pooled official 2024 lesion-wise Dice:",
        "",
        "| background weight | " + " | ".join(REGIONS) + " |",
        "|---|" + "---|" * len(REGIONS),
        *(f"| {w} | " + " | ".join(f"{pooled[w][r]:.3f}" for r in REGIONS) + " |" for w in pooled),
    ]
    write_results("real_background_weight", pooled, {"settings": {"work": [str(w) for w in args.work], "weights": args.weights,
                                                                  "tumour_min_voxels": args.tumour_min_voxels},
                                                     "per_case": per_case}, table)


if __name__ == "__main__":
    main()
