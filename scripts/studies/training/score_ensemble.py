"""Score model files alone and averaged on a set's held-out part (the protocol of train_recipes).

Given model files trained on the same set (e.g. the ``m.keras`` of ``train_recipes.py`` runs with
different seeds), each is scored alone and every pair is averaged into one model file (an
ensemble, :func:`geofuse.model.network.averaged`) and scored too. This is how the
“Two networks” evidence for averaging two networks was measured (this study's ``REPORT.md``).

    python scripts/studies/training/score_ensemble.py --set spacenet --work WORK \\
        --models RUNS/spacenet-capped-0/m.keras RUNS/spacenet-capped-1/m.keras

With ``--prefixes``, each model file given is an ensemble itself (``--members N``): its first
network alone, the average of its first two, of its first three, ... are scored (how much each
further network adds).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # scripts/: _common
from _common import held_out_protocol

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", required=True, help="spacenet, inria, roads or dubai-<tile>.")
    parser.add_argument("--models", nargs="+", required=True, help="Model files (.keras).")
    parser.add_argument("--work", type=Path, required=True, help="Scratch folder.")
    parser.add_argument("--prefixes", action="store_true",
                        help="Score the averages of each file's first 1, 2, ... networks.")
    args = parser.parse_args()

    from geofuse.model.modelfile import load_model, save_model
    from geofuse.model.network import averaged, member_networks
    from geofuse.training.evaluate import evaluate

    args.work.mkdir(parents=True, exist_ok=True)
    loaded = [load_model(m) for m in args.models]

    def score(path: Path) -> float | None:
        protocol = held_out_protocol(args.set, args.work, path)
        report = evaluate(dataclasses.replace(protocol.evaluation, model=path)).report
        return protocol.score(report)

    rows = []
    if args.prefixes:
        for n, model in enumerate(loaded):
            spec = model.info.spec
            networks = member_networks(model.model, spec)
            single = dataclasses.replace(spec, members=1)
            for k in range(1, len(networks) + 1):
                path = args.work / f"{args.set}-{n}-first-{k}.keras"
                info = dataclasses.replace(model.info, spec=dataclasses.replace(spec, members=k))
                save_model(averaged(networks[:k], single, model.info.patch_size), info, path)
                rows.append({"model": str(model.path), "networks": k, "score": score(path)})
                print(json.dumps(rows[-1]), flush=True)
        return
    for model in loaded:
        rows.append({"models": [str(model.path)], "score": score(model.path)})
        print(json.dumps(rows[-1]), flush=True)
    for i, j in itertools.combinations(range(len(loaded)), 2):
        first, second = loaded[i], loaded[j]
        ensemble = averaged([first.model, second.model], first.info.spec,
                            first.info.patch_size)
        spec = dataclasses.replace(first.info.spec, members=2)
        path = args.work / f"{args.set}-average-{i}-{j}.keras"
        save_model(ensemble, dataclasses.replace(first.info, spec=spec), path)
        rows.append({"models": [str(first.path), str(second.path)], "score": score(path)})
        print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
