"""How a model reads resection cavities carved into real anatomy it never saw (``gliomaseg synth --from``).

Run: ``.venv/bin/python benchmarks/bench_carved.py [--model NAME_OR_RUN] [--per-case 5]``. Carves
``--per-case`` cavities (seed 0) into each labelled bundled case (``examples/data``: real cases that no
packaged model trained on), predicts them and their pre-operative hosts with the model and its rules, and
scores them with the official 2024 lesion-wise protocol: RC and the tumour regions on the carved cases, and
the cavity the model puts on the hosts (every one false). Writes ``benchmarks/results/carved.{json,md}``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from common import write_results

from gliomaseg.data.carved_cavities import write_carved_cases
from gliomaseg.evaluation.protocol import OFFICIAL
from gliomaseg.inference.predictor import load_model, predict
from gliomaseg.io.cases import discover_cases
from gliomaseg.labels import REGIONS
from gliomaseg.measurement.volumes import label_volumes_ml
from gliomaseg.model.packaged import DEFAULT_MODEL
from gliomaseg.postprocessing.tuning import load_validation_cases

ROOT = Path(__file__).resolve().parent.parent
HOSTS = ROOT / "examples" / "data"


def _scores(pred_dir: Path, truth_dir: Path) -> dict[str, dict]:
    """Per case: lesion-wise Dice per region and the predicted cavity's volume (mL)."""
    rows = {}
    for case in load_validation_cases(pred_dir, truth_dir):
        objective = OFFICIAL.objective_scores(case.prediction, case.truth, case.spacing)
        rows[case.case_id] = {**{region: round(objective[region][0], 4) for region in REGIONS},
                              "predicted_rc_ml": round(label_volumes_ml(case.prediction, case.spacing)["RC"], 2),
                              "true_rc_ml": round(label_volumes_ml(case.truth, case.spacing)["RC"], 2)}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--per-case", type=int, default=5)
    args = parser.parse_args()
    model = load_model(args.model, "cpu")
    with tempfile.TemporaryDirectory() as work:
        hosts = Path(work) / "hosts"
        hosts.mkdir()
        for case in discover_cases(HOSTS):
            if case.seg is not None:
                (hosts / case.case_id).symlink_to(case.folder.resolve(), target_is_directory=True)
        carved = Path(work) / "carved"
        write_carved_cases(hosts, carved, args.per_case, seed=0)
        predict(carved, Path(work) / "pred_carved", model, quiet=True, fail_fast=True)
        predict(hosts, Path(work) / "pred_hosts", model, quiet=True, fail_fast=True)
        on_carved = _scores(Path(work) / "pred_carved", carved)
        on_hosts = _scores(Path(work) / "pred_hosts", hosts)
    means = {region: round(statistics.mean(row[region] for row in on_carved.values()), 3) for region in REGIONS}
    false_cavity = {case: row["predicted_rc_ml"] for case, row in on_hosts.items()}
    headline = {"model": args.model, "carved_cases": len(on_carved), "rc_dice": means["RC"],
                "hosts_with_false_cavity": sum(v > 0 for v in false_cavity.values())}
    table = [f"Model `{args.model}`, with its post-processing rules; {len(on_carved)} cases carved (seed 0) into "
             f"{len(on_hosts)} real bundled cases it never trained on. Official 2024 lesion-wise Dice, mean over cases.", "",
             "| on carved cases | " + " | ".join(REGIONS) + " |", "|---|" + "---|" * len(REGIONS),
             "| mean | " + " | ".join(f"{means[r]:.3f}" for r in REGIONS) + " |", "",
             "| case | true RC mL | predicted RC mL | RC Dice | WT Dice | ET Dice |", "|---|---|---|---|---|---|"]
    table += [f"| {case} | {row['true_rc_ml']:.1f} | {row['predicted_rc_ml']:.1f} | {row['RC']:.3f} | {row['WT']:.3f} | {row['ET']:.3f} |"
              for case, row in sorted(on_carved.items())]
    table += ["", "Pre-operative hosts (any predicted cavity is false): " +
              ", ".join(f"{case} {ml:.1f} mL" for case, ml in sorted(false_cavity.items())) + "."]
    write_results("carved", headline, {"per_case": on_carved, "hosts": on_hosts}, table)


if __name__ == "__main__":
    main()
