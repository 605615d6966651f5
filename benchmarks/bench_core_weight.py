"""Is the core a threshold away? The NETC probability scaled before the arg-max, scored on the real folds.

The shipped model labels twice as much of the true non-enhancing core oedema as it labels the other way round
(``results/real_cv.md``, where the core went). If that were a matter of calibration, a weight on the NETC
probability before the arg-max would win it back, at no training cost.

Run, once ``bench_real.py run`` has the setup's folds on this machine:
``.venv/bin/python benchmarks/bench_core_weight.py --work W [--setup cascadecarved64]``. Each fold's run predicts
its held-out cases as the cross-validation did (unprocessed; a two-stage run's first stage gated by its nested
rules), keeping the probabilities in ``W/<setup>/fold<K>/probabilities/`` (float16) so a second run only scores.
For each weight the NETC probability is multiplied by it, the arg-max taken, the fold's nested rules applied and
the official 2024 lesion-wise Dice scored. The weight a fold is scored with is the one best on the other folds'
cases (the tuning objective: the mean over the six regions), so no case is scored with a weight it helped choose.
Writes ``results/core_weight.{json,md}``: the mean per weight over all cases, and the nested choice's paired change
from weight 1 with a 95 % bootstrap interval over cases.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from bench_real import DEFAULT_DATA, SETUPS, folds_of, interval, nested_rules, prediction_models
from common import write_results

from gliomaseg.evaluation.protocol import OFFICIAL
from gliomaseg.inference.predictor import ensemble_probabilities
from gliomaseg.io.cases import LoadedCase, find_case_folders, load_case, read_case_folder
from gliomaseg.labels import REGIONS
from gliomaseg.postprocessing.rules import PostprocessRules

WEIGHTS = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0)
NETC = REGIONS["NETC"][0]

Scores = dict[str, dict[str, float]]
"""Weight (as text) -> region -> lesion-wise Dice of one case."""


def weighted_scores(probabilities: torch.Tensor, case: LoadedCase, decode: Callable[[torch.Tensor], torch.Tensor],
                    rules: PostprocessRules) -> Scores:
    """The case's lesion-wise Dice per region for each of WEIGHTS on its NETC probability (``decode``: the runs' targets')."""
    scores = {}
    for weight in WEIGHTS:
        scaled = probabilities.clone()
        scaled[NETC] *= weight
        objective = OFFICIAL.objective_scores(rules.apply(decode(scaled).numpy()), case.label, case.spacing)
        scores[str(weight)] = {region: objective[region][0] for region in REGIONS}
    return scores


def fold_scores(work: Path, setup: str, fold: int, folds: int) -> dict[str, Scores]:
    """Every held-out case of the fold, scored at every weight (its probabilities predicted once, then kept)."""
    fold_dir = work / setup / f"fold{fold}"
    models = prediction_models(work, setup, fold, folds)
    if any(m.targets.is_regions for m in models):
        raise SystemExit(f"{setup}: its runs output regions, and the weight is for a label's probability")
    rules, kept = nested_rules(work, setup, fold, folds), fold_dir / "probabilities"
    kept.mkdir(exist_ok=True)
    scores = {}
    for folder in find_case_folders(fold_dir / "held_out"):
        case = load_case(read_case_folder(folder))
        path = kept / f"{case.case_id}.npy"
        if not path.exists():
            np.save(path, ensemble_probabilities(models, case)[1].numpy().astype(np.float16))
        probabilities = torch.from_numpy(np.load(path).astype(np.float32))
        scores[case.case_id] = weighted_scores(probabilities, case, models[0].targets.decode, rules)
    return scores


def objective(scores: Scores, weight: str) -> float:
    return float(np.mean([scores[weight][region] for region in REGIONS]))


def nested_choice(by_fold: list[dict[str, Scores]]) -> list[str]:
    """For each fold, the weight with the best mean objective over the other folds' cases."""
    weights = [str(w) for w in WEIGHTS]
    return [max(weights, key=lambda w: np.mean([objective(s, w) for k, cases in enumerate(by_fold) if k != fold for s in cases.values()]))
            for fold in range(len(by_fold))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="bench_real.py's work folder, with the setup's folds")
    parser.add_argument("--setup", default="cascadecarved64", choices=SETUPS)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if len(folds_of(args.data, args.folds, args.seed)) != args.folds:
        raise SystemExit(f"{args.data}: fewer patients than {args.folds} folds")
    by_fold = [fold_scores(args.work, args.setup, fold, args.folds) for fold in range(args.folds)]
    chosen = nested_choice(by_fold)
    cases = {case: scores for fold in by_fold for case, scores in fold.items()}
    per_weight = {str(w): {r: round(float(np.mean([s[str(w)][r] for s in cases.values()])), 4) for r in REGIONS} for w in WEIGHTS}
    changes = {r: [s[chosen[k]][r] - s["1.0"][r] for k, fold in enumerate(by_fold) for s in fold.values()] for r in REGIONS}
    nested = {r: interval(v) for r, v in changes.items()}
    headline = {"setup": args.setup, "chosen_per_fold": [float(w) for w in chosen], **{r: nested[r]["mean"] for r in REGIONS}}
    table = [f"{args.setup}'s runs, {len(cases)} real cases, each fold's nested rules; lesion-wise Dice (official 2024 protocol) "
             "with the NETC probability multiplied by the weight before the arg-max:", "",
             "| NETC weight | " + " | ".join(REGIONS) + " |", "|---|" + "---|" * len(REGIONS)]
    table += [f"| {w} | " + " | ".join(f"{per_weight[str(w)][r]:.3f}" for r in REGIONS) + " |" for w in WEIGHTS]
    table += ["", f"The weight chosen for each fold on the other folds' cases: {', '.join(chosen)}; paired change from weight 1 "
              "(per case, the mean with a 95 % bootstrap interval over cases):", "",
              "| " + " | ".join(REGIONS) + " |", "|" + "---|" * len(REGIONS),
              "| " + " | ".join(f"{nested[r]['mean']:+.3f} [{nested[r]['low']:+.3f}, {nested[r]['high']:+.3f}]" for r in REGIONS) + " |"]
    write_results("core_weight", headline, {"weights": list(WEIGHTS), "per_weight": per_weight, "chosen_per_fold": chosen,
                                            "nested_change": nested, "per_case": cases}, table)


if __name__ == "__main__":
    main()
