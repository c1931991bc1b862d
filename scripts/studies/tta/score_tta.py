"""Does test-time augmentation raise the held-out score of models already trained?

Each model folder left by ``scripts/studies/training/train_recipes.py``
(``WORK/<set>-<recipe>-<seed>/m.keras``)
is scored on its set's held-out part without and with ``--tta``, by the protocol of
``scripts/_common.py``. A model whose score without TTA differs from its result file's is
skipped (the folder was reused by a later run of another budget). One JSON line per model.

    python scripts/studies/tta/score_tta.py --work WORK --set spacenet --budget 300 \
        --tta all > tta.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # scripts/: _common
from _common import held_out_protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from train_recipes import RUNS  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--set", default="spacenet")
    parser.add_argument("--budget", type=int, default=300, help="seconds, as in the run files")
    parser.add_argument("--tta", default="all")
    args = parser.parse_args()

    from geofuse.training.evaluate import evaluate

    prefix = f"{args.set}-"
    for run in sorted(args.work.glob(f"{prefix}*")):
        model = run / "m.keras"
        name = run.name[len(prefix):]
        recipe, _, seed = name.rpartition("-")
        result = RUNS / f"{args.set.replace(' ', '_')}-{recipe}-{args.budget}s-seed{seed}.json"
        if not model.exists() or not result.exists():
            continue
        recorded = json.loads(result.read_text())["held_out_score"]
        protocol = held_out_protocol(args.set, args.work, model)
        scores = {}
        for tta in ("none", args.tta):
            report = evaluate(dataclasses.replace(protocol.evaluation, tta=tta)).report
            scores[tta] = protocol.score(report)
        if abs(scores["none"] - recorded) > 1e-4:
            print(f"{run.name}: {scores['none']:.4f} without TTA, the run file says "
                  f"{recorded:.4f}: another model, skipped", file=sys.stderr)
            continue
        print(json.dumps({"model": run.name, "recipe": recipe, "seed": int(seed),
                          "score": scores["none"], f"tta_{args.tta}": scores[args.tta]}),
              flush=True)


if __name__ == "__main__":
    main()
