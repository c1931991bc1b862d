"""The held-out protocol of the embedded default model (issue 16), fixed before any training.

Every real RGB set in ``../shared/data/real`` whose classes map onto the default classes (land,
building, road, water, vegetation), with the part never seen in training, its class mapping,
its licence and whether a model that geofuse distributes may be trained on it:

==============  =========================================  ===========================  =======
set             held-out part                              classes scored               trains
==============  =========================================  ===========================  =======
dubai           ``Tile 2`` (9 images)                      all five (mean IoU)          yes
zanzibar        the eastern 40 % of the 0.08 m tile        building, one vs the rest    yes
inria           the whole 0.3 m Austin crop                building, one vs the rest    no
massachusetts   the 16 roads tiles, white no-data masked   road, one vs the rest        no
==============  =========================================  ===========================  =======

Sets that label one class say "one of the other classes" everywhere else (a class set,
:mod:`geofuse.training.labels`): a "not building" pixel predicted building is a false positive
of building and counts for no other class. Inria's licence is not stated clearly and the
Massachusetts subset states none: a model geofuse distributes is not trained on them, they are
scored only. Each scored part has a trivial baseline: the majority class everywhere (Dubai), or
the scored class everywhere (the one-class sets).

    python scripts/default_protocol.py --model geofuse/models/default.keras --name old
    python scripts/default_protocol.py --report-only      # the tables of docs/default-model.md

Each run writes ``docs/default-model-runs/<name>.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _common import DUBAI, REAL, ROOT, dubai_holdout, git_commit, write_json_atomic

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RUNS = ROOT / "docs" / "default-model-runs"
CLASSES = ("land", "building", "road", "water", "vegetation")
HOLDOUT = "Tile 2"
ZANZIBAR_SPLIT = 0.6  # the western 60 % of the Zanzibar tile trains, the rest is held out


@dataclass(frozen=True)
class HeldOutPart:
    """One scored part: what it is, how its masks code the classes, what may train on it."""

    name: str
    description: str
    scored: tuple[str, ...]  # the classes whose IoU is reported
    licence: str
    trains: bool


PARTS = (
    HeldOutPart("dubai", f"Dubai land cover, {HOLDOUT} (9 images, RGB, GSD not stated)",
                CLASSES, "CC0 1.0 (Humans in the Loop / MBRSC)", True),
    HeldOutPart("zanzibar", "Zanzibar drone tile, eastern 40 % (0.0775 m, 7 buildings in all)",
                ("building",), "imagery CC BY 4.0 (Zanzibar Mapping Initiative / Commission for "
                "Lands, Zanzibar); labels believed CC BY 4.0", True),
    HeldOutPart("inria", "Inria Aerial Image Labeling, Austin crop (0.3 m, 1000 x 1000)",
                ("building",), "not stated clearly (Inria; public-domain sources): scored only",
                False),
    HeldOutPart("massachusetts", "Massachusetts Roads, 16 tiles (about 1 m, 1500 x 1500, white "
                "no-data masked)", ("road",), "none stated (Mnih 2013; OSM labels): scored only",
                False),
)


def one_class_coding(name: str, value: int, other: int) -> Any:
    """Masks with ``value`` for class ``name`` and ``other`` for "one of the other classes"."""
    from geofuse.training.labels import LabelCoding

    index = CLASSES.index(name)
    free = iter(range(200, 250))  # mask values no pixel has: the classes these masks never name
    values = tuple(value if i == index else next(free) for i in range(len(CLASSES)))
    rest = tuple(i for i in range(len(CLASSES)) if i != index)
    return LabelCoding(classes=len(CLASSES), values=values, sets=(rest,), set_values=(other,),
                       mode="ids")


def crop(src: Path, dest: Path, start: float, stop: float = 1.0, pixel: float | None = None,
         labels: bool = False) -> Path:
    """Columns ``[start, stop)`` (shares of the width) of ``src`` as a georeferenced GeoTIFF.

    ``pixel``: resample to this pixel size (metres; the image averaged, a mask (``labels``) by
    its most frequent value).
    """
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    with rasterio.open(src) as ds:
        col0, col1 = int(round(ds.width * start)), int(round(ds.width * stop))
        window = Window(col0, 0, col1 - col0, ds.height)
        transform = ds.window_transform(window)
        scale = 1.0 if pixel is None else pixel / abs(transform.a)
        shape = (max(1, round(window.height / scale)), max(1, round(window.width / scale)))
        data = ds.read(window=window, out_shape=(ds.count, *shape),
                       resampling=Resampling.mode if labels else Resampling.average)
        transform = transform * transform.scale(window.width / shape[1], window.height / shape[0])
        profile = {"driver": "GTiff", "width": shape[1], "height": shape[0], "count": ds.count,
                   "dtype": ds.dtypes[0], "crs": ds.crs, "transform": transform,
                   "compress": "deflate", "nodata": ds.nodata}
        with rasterio.open(dest, "w", **profile) as out:
            out.write(data)
            out.colorinterp = ds.colorinterp
    return dest


def white_masked(src: Path, dest: Path) -> Path:
    """``src`` (RGB) as a GeoTIFF whose alpha band hides pure white (255, 255, 255) pixels."""
    import rasterio
    from rasterio.enums import ColorInterp

    with rasterio.open(src) as ds:
        rgb = ds.read()
    alpha = np.where(np.all(rgb == 255, axis=0), 0, 255).astype(np.uint8)
    with rasterio.open(dest, "w", driver="GTiff", width=rgb.shape[2], height=rgb.shape[1],
                       count=4, dtype="uint8", compress="deflate") as out:
        out.write(np.concatenate([rgb, alpha[None]]))
        out.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue,
                           ColorInterp.alpha]
    return dest


def evaluations(model: Path, work: Path) -> dict[str, list[Any]]:
    """Per part, the ``EvaluateConfig`` of each of its scenes (tiles for Dubai)."""
    from geofuse.training.config import EvaluateConfig, SceneSource

    zanzibar = REAL / "zanzibar-drone-deeposlandia"
    inria = REAL / "inria-austin-deeposlandia"
    roads = REAL / "massachusetts-roads-subset"
    image = crop(zanzibar / "tanzania_sample_image.tif", work / "zanzibar_east.tif",
                 ZANZIBAR_SPLIT)
    labels = crop(zanzibar / "tanzania_sample_mask_DERIVED.tif", work / "zanzibar_east_mask.tif",
                  ZANZIBAR_SPLIT, labels=True)
    configs: dict[str, list[Any]] = {
        "dubai": [dubai_holdout(model, HOLDOUT, DUBAI)],
        "zanzibar": [EvaluateConfig(source=SceneSource(
            image, labels, coding=one_class_coding("building", 1, 0)), model=model)],
        "inria": [EvaluateConfig(source=SceneSource(
            inria / "aerial_sample_image.tif", inria / "aerial_sample_labels.tif",
            coding=one_class_coding("building", 255, 0)), model=model)],
        "massachusetts": [],
    }
    for png in sorted((roads / "images").glob("*.png")):
        configs["massachusetts"].append(EvaluateConfig(source=SceneSource(
            white_masked(png, work / f"{png.stem}.tif"), roads / "masks" / png.name,
            coding=one_class_coding("road", 255, 0)), model=model))
    return configs


def score(model: Path) -> dict[str, Any]:
    """Evaluate ``model`` on every held-out part; confusion matrices summed over its scenes."""
    from geofuse.training.evaluate import evaluate
    from geofuse.training.metrics import summarize

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="geofuse-default-") as tmp:
        for part, configs in evaluations(model, Path(tmp)).items():
            cm = np.zeros((len(CLASSES), len(CLASSES)), np.int64)
            set_fp = np.zeros(len(CLASSES), np.int64)
            set_pixels = 0
            for config in configs:
                report = evaluate(config).report
                cm += np.asarray(report["confusion_matrix"], np.int64)
                set_fp += np.asarray(report.get("set_false_positives", [0] * len(CLASSES)))
                set_pixels += report.get("set_pixels", 0)
            results[part] = summarize(cm, CLASSES, set_fp) | {"scenes": len(configs),
                                                              "set_pixels": set_pixels}
            results[part]["baseline"] = baseline(part, cm, set_pixels)
            print(f"{part}: " + ", ".join(
                f"{c} {results[part]['classes'][c]['iou']}" for c in scored(part)), flush=True)
    return results


def scored(part: str) -> tuple[str, ...]:
    return next(p.scored for p in PARTS if p.name == part)


def baseline(part: str, cm: np.ndarray, set_pixels: int) -> dict[str, float]:
    """The trivial baseline's IoU per scored class, from the labels' class totals.

    Dubai: the majority class everywhere (its IoU is its share; every other class 0).
    One-class parts: the scored class everywhere (IoU = its share of the scored pixels, the
    set pixels included, which that baseline calls the class).
    """
    labelled = cm.sum(axis=1)  # exactly labelled pixels per class
    if part == "dubai":
        top = int(np.argmax(labelled))
        return {c: (float(labelled[top] / labelled.sum()) if i == top else 0.0)
                for i, c in enumerate(CLASSES)}
    return {c: float(labelled[CLASSES.index(c)] / (labelled.sum() + set_pixels))
            for c in scored(part)}


def protocol_table() -> str:
    """The protocol (markdown): each part, what is scored, its licence, whether it trains."""
    lines = ["| set | held-out part | scored | licence | may train the distributed model |",
             "| --- | --- | --- | --- | --- |"]
    for p in PARTS:
        scored_text = ", ".join(p.scored) if len(p.scored) < len(CLASSES) else \
            "all five classes (and their mean)"
        lines.append(f"| {p.name} | {p.description} | {scored_text} | {p.licence} | "
                     f"{'yes' if p.trains else 'no: scored only'} |")
    return "\n".join(lines)


def report() -> str:
    """The held-out table (markdown) of every result file, models as columns."""
    runs = {p.stem: json.loads(p.read_text()) for p in sorted(RUNS.glob("*.json"))}
    names = sorted(runs, key=lambda n: (n != "old", n))
    lines = ["| part | class | " + " | ".join(names) + " | trivial baseline |",
             "| --- | --- | " + " | ".join("---" for _ in names) + " | --- |"]

    def fmt(value: float | None) -> str:
        return "–" if value is None else f"{value:.3f}"

    for part in PARTS:
        rows = [*part.scored, "mean"] if part.name == "dubai" else part.scored
        for c in rows:
            cells = []
            for n in names:
                r = runs[n]["parts"].get(part.name, {})
                cells.append(fmt(r.get("mean_iou") if c == "mean" else
                                 r.get("classes", {}).get(c, {}).get("iou")))
            base = runs[names[0]]["parts"].get(part.name, {}).get("baseline", {})
            trivial = (sum(base.values()) / len(base) if c == "mean" and base
                       else base.get(c))
            lines.append(f"| {part.name} | {c} | " + " | ".join(cells) + f" | {fmt(trivial)} |")
    models = [f"- `{n}`: `{runs[n]['model']}` (SHA-256 {runs[n]['model_sha256'][:12]}, "
              f"scored at geofuse {runs[n]['geofuse_commit']})" for n in names]
    return "\n".join(lines + [""] + models)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "geofuse" / "models" / "default.keras")
    parser.add_argument("--name", default="old", help="Result file name (old, new, ...).")
    parser.add_argument("--report-only", action="store_true",
                        help="Print the table of the result files, score nothing.")
    args = parser.parse_args()
    if not args.report_only:
        record(args.model, args.name)
    print(protocol_table() + "\n\n" + report())


def record(model: Path, name: str | None) -> dict[str, Any]:
    """Score ``model`` and, with a ``name``, keep the scores in ``RUNS/<name>.json``."""
    results = score(model)
    if name:
        path = model.resolve()
        write_json_atomic(RUNS / f"{name}.json", {
            "model": os.path.relpath(path, ROOT) if path.is_relative_to(ROOT) else path.name,
            "model_sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
            "geofuse_commit": git_commit(), "parts": results,
        })
    return results


if __name__ == "__main__":
    main()
