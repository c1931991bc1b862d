"""The simulated labelling loop: windows chosen by ``suggest`` against windows drawn at random.

A trial (set, arm, seed) has three rounds. In each, ``k`` new windows of ``size`` pixels are
chosen in the set's pool scene and "labelled" (cut from its labels), and a model is
fine-tuned from the embedded one on every window chosen so far, for the same time budget in
both arms, then scored on the set's test area:

- ``suggest``: ``geofuse suggest`` with the model of the round before (round 1: the embedded
  model), the windows chosen before given as areas to exclude;
- ``random``: ``k`` windows drawn (seed ``2000 + 10 * seed + round``) from the same grid of
  candidates (at least half their pixels labelled), none chosen before.

Each round is one subprocess writing ``runs/loop-<set>-<arm>-s<seed>-r<round>.json`` with the
windows chosen so far; a trial resumes at its first missing round.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window
from sets import IGNORE, prepare, write

ARMS = ("suggest", "random")
ROUNDS = 3
WINDOWS = 4
SIZE = 128
MIN_VALID = 0.5


def name_of(spec: dict[str, Any], round_: int) -> str:
    return f"loop-{spec['set']}-{spec['arm']}-s{spec['seed']}-r{round_}"


def candidates(labels: Path, size: int) -> list[tuple[int, int]]:
    """``(row, col)`` of the grid windows with at least :data:`MIN_VALID` of pixels labelled."""
    with rasterio.open(labels) as ds:
        ids = ds.read(1)
    found = []
    for row in range(0, ids.shape[0], size):
        for col in range(0, ids.shape[1], size):
            if (ids[row : row + size, col : col + size] != IGNORE).sum() >= MIN_VALID * size**2:
                found.append((row, col))
    return found


def exclusion(image: Path, windows: list[list[int]], size: int, path: Path) -> Path | None:
    """The windows chosen before as polygons in the pool scene's CRS (None: none yet)."""
    if not windows:
        return None
    from pyogrio.raw import write as write_vector
    from shapely import box, to_wkb

    with rasterio.open(image) as ds:
        transform, crs = ds.transform, ds.crs
    shapes = []
    for row, col in windows:
        (x0, y0), (x1, y1) = transform * (col, row), transform * (col + size, row + size)
        shapes.append(box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
    write_vector(
        path,
        np.array(to_wkb(shapes), dtype=object),
        [np.arange(len(shapes))],
        ["id"],
        crs=crs.to_string() if crs else None,
        driver="GPKG",
        geometry_type="Polygon",
    )
    return path


def choose_windows(
    spec: dict[str, Any],
    round_: int,
    before: list[list[int]],
    model: str,
    image: Path,
    labels: Path,
    scratch: Path,
) -> list[list[int]]:
    """The windows a round adds."""
    if spec["arm"] == "random":
        taken = {tuple(w) for w in before}
        free = [w for w in candidates(labels, spec["size"]) if w not in taken]
        rng = np.random.default_rng(2000 + 10 * spec["seed"] + round_)
        return [list(free[i]) for i in rng.choice(len(free), spec["windows"], replace=False)]
    from geofuse.products.suggest import SuggestConfig, suggest

    exclude = exclusion(image, before, spec["size"], scratch / "labelled.gpkg")
    config = SuggestConfig(
        count=spec["windows"],
        size=spec["size"],
        exclude=exclude,
        min_valid=MIN_VALID,
        overwrite=True,
    )
    result = suggest([image], scratch / "suggested.gpkg", model, config)
    return [[w["row"], w["col"]] for w in result.windows]


def cut(windows: list[list[int]], image: Path, labels: Path, size: int, folder: Path) -> list[Path]:
    """The windows as labelled tiles (``images/wNN.tif``, ``masks/wNN.tif``)."""
    paths = []
    with rasterio.open(image) as src, rasterio.open(labels) as lab:
        for k, (row, col) in enumerate(windows):
            window = Window(col, row, min(size, src.width - col), min(size, src.height - row))
            like = {"crs": src.crs, "transform": src.window_transform(window)} if src.crs else {}
            data = src.read(window=window)
            alpha = data[3] if data.shape[0] == 4 else None
            paths.append(
                write(
                    folder / "images" / f"w{k:02d}.tif",
                    data[:3] if alpha is not None else data,
                    like,
                    alpha=alpha,
                )
            )
            write(folder / "masks" / f"w{k:02d}.tif", lab.read(1, window=window), like)
    return paths


def loop_round(spec: dict[str, Any], work: Path, runs: Path) -> None:
    """One round of a trial (in its own process): choose, label, fine-tune, score."""
    from _common import write_json_atomic
    from run import code_commit, score, train_model

    folder, manifest = prepare(spec["set"], work)
    image, labels = (folder / p for p in manifest.pool[0])
    round_ = spec["round"]
    name = name_of(spec, round_)
    scratch = work / "scratch" / name
    scratch.mkdir(parents=True, exist_ok=True)
    before: list[list[int]] = []
    model = "default"
    if round_ > 1:
        previous = json.loads((runs / f"{name_of(spec, round_ - 1)}.json").read_text())
        before = previous["windows"]
        model = str(work / "scratch" / name_of(spec, round_ - 1) / "model.keras")
    started = time.time()
    new = choose_windows(spec, round_, before, model, image, labels, scratch)
    windows = before + new
    tiles = cut(windows, image, labels, spec["size"], scratch / "tiles")
    out = scratch / "model.keras"
    record = dict(spec) | {
        "name": name,
        "new": new,
        "windows": windows,
        "chosen_with": model if spec["arm"] == "suggest" else "random",
    }
    record["train"] = train_model(spec | {"init": "default"}, folder, manifest, out, tiles)
    record |= score(out, folder, manifest, scratch)
    record |= {
        "commit": code_commit(),
        "wall_seconds": round(time.time() - started, 1),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_json_atomic(runs / f"{name}.json", record)


def loop_queue(args: Any, runs: Path, work: Path) -> None:
    """Every trial's missing rounds, in order, one subprocess each.

    With ``args.jobs`` 2 the two arms of a (set, seed) run side by side, round by round, so
    both see the same load.
    """
    from run import LOOP_SETS

    for seed in args.seeds:
        for name in args.sets or LOOP_SETS:
            trials = [
                {
                    "set": name,
                    "arm": arm,
                    "seed": seed,
                    "budget": args.budget,
                    "windows": WINDOWS,
                    "size": SIZE,
                }
                for arm in ARMS
            ]
            if args.jobs > 1:
                with ThreadPoolExecutor(len(trials)) as pool:
                    list(pool.map(lambda spec: run_trial(spec, runs, work), trials))
            else:
                for spec in trials:
                    run_trial(spec, runs, work)


def run_trial(spec: dict[str, Any], runs: Path, work: Path) -> None:
    """The trial's missing rounds, in order; a failed round ends the trial."""
    for round_ in range(1, ROUNDS + 1):
        if (runs / f"{name_of(spec, round_)}.json").exists():
            continue
        print(f"{time.strftime('%H:%M:%S')} {name_of(spec, round_)}", flush=True)
        done = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).with_name("run.py")),
                "round",
                json.dumps(spec | {"round": round_}),
                "--work",
                str(work),
            ],
            check=False,
        )
        if done.returncode:
            print(f"  failed with exit code {done.returncode}", flush=True)
            break
