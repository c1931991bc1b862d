"""The int8 study: what the int8 network costs against f32, and what it saves in time.

Subcommands, each writing one result file per run into ``runs/``:

* ``choose``: NNCF settings (:data:`VARIANTS`) compared by class agreement with f32 on
  images the default model trained on (the first image of each Dubai training tile folder and
  the synthetic scene_a; never a held-out part). The settings chosen go into
  ``geofuse.model.quantize.QUANTIZATION``.
* ``accuracy``: the model's f32 and int8 networks (OpenVINO, alternating per part) on every
  held-out part of scripts/default_protocol.py, plus the SpaceNet east part with a model
  trained on SpaceNet west (``--spacenet-model``; trained here when missing): per part the share
  of valid pixels of the same class (agreement), and per scored class the IoU of each, and
  their change. ``--record`` writes the result into the model file (``int8.json``), where
  ``--precision auto`` reads it (geofuse.model.calibration.int8_evidence).
* ``startup``: a 256² chip segmented with a warm cache (f32 and int8), against
  ``python -c "import rasterio, openvino"``, alternating, with the heavy modules each run
  imported.

Speed (model only and end to end, 8192²) is measured with scripts/bench.py
(``--runtimes openvino:f32 openvino:int8``); its output is kept in ``runs/`` too.

    python scripts/studies/int8/run_study.py choose
    python scripts/studies/int8/run_study.py accuracy --name default --record
    python scripts/studies/int8/run_study.py startup --repeat 5 --baseline ../main
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # scripts/, for _common and default_protocol

import numpy as np  # noqa: E402
from _common import (  # noqa: E402
    DUBAI,
    ROOT,
    SAMPLES,
    SPACENET_LABELS,
    git_commit,
    held_out_protocol,
    write_json_atomic,
)
from default_protocol import HOLDOUT, evaluations, part_named  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
RUNS = HERE / "runs"
VARIANTS = {  # the first round, then the second (--variants)
    "mixed-fbc": {"preset": "mixed", "fast_bias_correction": True},
    "performance-fbc": {"preset": "performance", "fast_bias_correction": True},
    "mixed-bc": {"preset": "mixed", "fast_bias_correction": False},
    "performance-fbc-ends": {
        "preset": "performance",
        "fast_bias_correction": True,
        "f32_layers": "ends",
    },
    "performance-fbc-minmax": {
        "preset": "performance",
        "fast_bias_correction": True,
        "activation_ranges": "minmax",
    },
    "performance-fbc-ends-minmax": {
        "preset": "performance",
        "fast_bias_correction": True,
        "f32_layers": "ends",
        "activation_ranges": "minmax",
    },
}


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    from geofuse.model.ovimport import package_version, probe_openvino

    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "unknown",
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),
        "openvino": probe_openvino().version,
        "nncf": package_version("nncf"),
        "geofuse_commit": git_commit(),
        "note": "shared machine: other engineers' jobs ran at the same time",
    }


@contextlib.contextmanager
def captured_masks(folder: Path, tag: str):  # noqa: ANN201
    """Keep a copy of every mask ``segment_scene`` writes (``evaluate`` deletes its own)."""
    import geofuse.segment as segment

    real = segment.segment_scene
    paths: list[Path] = []

    def keeping(scene: Any, out: Any, *args: Any, **kwargs: Any) -> Any:
        result = real(scene, out, *args, **kwargs)
        kept = folder / f"{tag}-{len(paths):03d}.tif"
        shutil.copyfile(out, kept)
        paths.append(kept)
        return result

    segment.segment_scene = keeping
    try:
        yield paths
    finally:
        segment.segment_scene = real


def masks_agreement(f32: list[Path], int8: list[Path]) -> tuple[float, int]:
    """Share of pixels valid in both masks where the classes agree, and those pixels."""
    import rasterio

    same = total = 0
    for a, b in zip(f32, int8, strict=True):
        with rasterio.open(a) as da, rasterio.open(b) as db:
            x, y = da.read(1), db.read(1)
        valid = (x != 255) & (y != 255)
        same += int((x == y)[valid].sum())
        total += int(valid.sum())
    return same / max(1, total), total


def scored_ious(part: str, report: dict[str, Any], classes: tuple[str, ...]) -> dict[str, float]:
    """IoU of each scored class (and their mean where every class is scored)."""
    ious = {c: report["classes"][c]["iou"] for c in classes}
    if len(classes) > 1:
        ious["mean"] = report["mean_iou"]
    return ious


def score_part(
    configs: list[Any], precision: str, work: Path, tag: str
) -> tuple[dict[str, Any], list[Path], float]:
    """Evaluate each config at ``precision`` (OpenVINO); the summed report and the masks."""
    from geofuse.training.evaluate import evaluate
    from geofuse.training.metrics import summarize

    names = None
    total = set_fp = None
    start = time.perf_counter()
    with captured_masks(work, f"{tag}-{precision}") as masks:
        for config in configs:
            config = replace(
                config, tiling=replace(config.tiling, runtime="openvino", precision=precision)
            )
            report = evaluate(config).report
            names = names or [c for c in report["classes"]]
            cm = np.asarray(report["confusion_matrix"], np.int64)
            fp = np.asarray(report.get("set_false_positives", [0] * len(cm)), np.int64)
            total = cm if total is None else total + cm
            set_fp = fp if set_fp is None else set_fp + fp
    return summarize(total, names, set_fp), list(masks), time.perf_counter() - start


def spacenet_model(path: Path, work: Path, minutes: float) -> Path:
    """A model trained on SpaceNet west (the shared protocol); it carries its training chips."""
    if path.exists():
        return path
    from geofuse.training.config import TrainConfig
    from geofuse.training.train import train

    protocol = held_out_protocol("spacenet", work, path)
    train(
        TrainConfig(
            sources=protocol.sources,
            out=path,
            labels=protocol.labels,
            time_limit=minutes * 60,
            seed=0,
            **protocol.train_options,
        )
    )
    return path


def accuracy(args: argparse.Namespace) -> None:
    """f32 against int8 on every held-out part; one result file."""
    from geofuse.model.calibration import model_calibration
    from geofuse.model.modelfile import load_model
    from geofuse.model.quantize import QUANTIZATION
    from geofuse.training.config import EvaluateConfig, SceneSource

    model = args.model.resolve()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="geofuse-int8-") as tmp:
        work = Path(tmp)
        parts = evaluations(model, work)
        if not args.parts or "spacenet" in args.parts:
            trained = spacenet_model(args.spacenet_model, work, args.spacenet_minutes)
            east = held_out_protocol("spacenet", work, trained).evaluation
            parts["spacenet"] = [
                EvaluateConfig(
                    source=SceneSource(east.source.scene, SPACENET_LABELS), model=trained
                )
            ]
        for part, configs in parts.items():
            if args.parts and part not in args.parts:
                continue
            classes = ("building",) if part == "spacenet" else part_named(part).scored
            runs = {}
            for precision in ("f32", "int8"):  # alternating: the same load for both
                report, masks, seconds = score_part(configs, precision, work, part)
                runs[precision] = (scored_ious(part, report, classes), masks, seconds)
            agreement, pixels = masks_agreement(runs["f32"][1], runs["int8"][1])
            change = {c: round(runs["int8"][0][c] - runs["f32"][0][c], 6) for c in runs["f32"][0]}
            results[part] = {
                "agreement": round(agreement, 6),
                "valid_pixels": pixels,
                "iou_f32": runs["f32"][0],
                "iou_int8": runs["int8"][0],
                "iou_change": change,
                "seconds": {p: round(runs[p][2], 1) for p in runs},
                "limit": part != "spacenet" and part_named(part).limit,
                "model": "spacenet west model" if part == "spacenet" else model.name,
            }
            print(
                f"{part}: agreement {agreement:.4f} over {pixels} px, IoU change "
                + ", ".join(f"{c} {v:+.4f}" for c, v in change.items()),
                flush=True,
            )
    chips = model_calibration(model)
    out = {
        "study": "int8",
        "kind": "accuracy",
        "model": str(model.relative_to(ROOT)) if model.is_relative_to(ROOT) else model.name,
        "model_sha256": load_model(model).digest,
        "calibration_sha256": chips.digest if chips else None,
        "calibration_chips": len(chips.chips) if chips else 0,
        "quantization": QUANTIZATION,
        "machine": machine(),
        "parts": results,
    }
    path = write_json_atomic(RUNS / f"accuracy-{args.name}.json", out)
    print(f"wrote {path}")
    if args.record:
        record(model, out)


def record(model: Path, run: dict[str, Any]) -> None:
    """Write the in-domain parts of an accuracy run into the model file as its int8 record."""
    from geofuse.model.calibration import int8_evidence, record_int8_check

    sets = {
        part: {"agreement": r["agreement"], "iou_change": r["iou_change"]}
        for part, r in run["parts"].items()
        if not r["limit"] and r["model"] == model.name
    }
    limits = {
        part: {"agreement": r["agreement"], "iou_change": r["iou_change"]}
        for part, r in run["parts"].items()
        if r["limit"]
    }
    record_int8_check(
        model,
        sets,
        {
            "limits": limits,
            "measured": {k: run["machine"][k] for k in ("openvino", "nncf")},
            "geofuse_commit": run["machine"]["geofuse_commit"],
            "quantization": run["quantization"],
            "study": "scripts/studies/int8",
        },
    )
    print(f"{model}: int8 record written; auto picks int8: {int8_evidence(model)}")


def choose(args: argparse.Namespace) -> None:
    """NNCF settings by class agreement with f32 on training images of the default model."""
    import geofuse.model.quantize as quantize
    from geofuse.model.modelfile import load_model
    from geofuse.segment import segment_scene

    model = load_model(args.model)
    images = [
        sorted((DUBAI / t.name / "images").glob("*.jpg"))[0]
        for t in sorted(DUBAI.glob("Tile *"))
        if t.name != HOLDOUT
    ]
    images.append(SAMPLES / "scene_a.tif")
    results = {}
    with tempfile.TemporaryDirectory(prefix="geofuse-int8-choose-") as tmp:
        work = Path(tmp)
        os.environ["GEOFUSE_CACHE_DIR"] = str(work / "cache-f32")
        f32 = []
        for i, image in enumerate(images):
            out = work / f"f32-{i}.tif"
            segment_scene(image, out, model, _config("f32"))
            f32.append(out)
        for name in args.variants or VARIANTS:
            settings = VARIANTS[name]
            quantize.QUANTIZATION.clear()
            quantize.QUANTIZATION.update(settings)
            os.environ["GEOFUSE_CACHE_DIR"] = str(work / f"cache-{name}")  # quantized afresh
            start = time.perf_counter()
            masks = []
            for i, image in enumerate(images):
                out = work / f"{name}-{i}.tif"
                segment_scene(image, out, model, _config("int8"))
                masks.append(out)
            agreement, pixels = masks_agreement(f32, masks)
            results[name] = {
                "settings": settings,
                "agreement": round(agreement, 6),
                "valid_pixels": pixels,
                "seconds_with_quantization": round(time.perf_counter() - start, 1),
            }
            print(f"{name}: agreement {agreement:.4f} over {pixels} px", flush=True)
    write_json_atomic(
        RUNS / f"choose-{args.name}.json",
        {
            "study": "int8",
            "kind": "choose",
            "model": args.model.name,
            "images": [
                str(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p.relative_to(ROOT.parent))
                for p in images
            ],
            "machine": machine(),
            "variants": results,
        },
    )


def _config(precision: str) -> Any:
    from geofuse.config import SegmentConfig, TilingConfig

    return SegmentConfig(
        tiling=TilingConfig(runtime="openvino", precision=precision), overwrite=True
    )


def startup(args: argparse.Namespace) -> None:
    """Wall time of a warm-cache 256² chip against importing rasterio and OpenVINO."""
    import rasterio
    from rasterio.windows import Window

    env = os.environ | {"PYTHONPATH": str(ROOT)}
    # as installed: Python's bytecode cache in use (the first, warming run writes it)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    with tempfile.TemporaryDirectory(prefix="geofuse-int8-startup-") as tmp:
        work = Path(tmp)
        env["GEOFUSE_CACHE_DIR"] = str(work / "cache")
        chip = work / "chip.tif"
        with rasterio.open(SAMPLES / "scene_b.tif") as ds:
            window = Window(0, 0, 256, 256)
            profile = ds.profile | {
                "width": 256,
                "height": 256,
                "tiled": False,
                "transform": ds.window_transform(window),
            }
            for key in ("blockxsize", "blockysize"):
                profile.pop(key, None)
            with rasterio.open(chip, "w", **profile) as out:
                out.write(ds.read(window=window))
        probe = (
            "import atexit, sys; atexit.register(lambda: print('MODULES', *sorted(m for m "
            "in ('tensorflow', 'keras', 'nncf') if m in sys.modules), file=sys.stderr)); "
            "from geofuse.cli import main; sys.argv = ['geofuse', *sys.argv[1:]]; main()"
        )
        commands = {
            "import rasterio, openvino": ([sys.executable, "-c", "import rasterio, openvino"], env)
        }
        for precision in ("f32", "int8"):
            commands[f"segment 256² {precision}"] = (
                [
                    sys.executable,
                    "-c",
                    probe,
                    "segment",
                    str(chip),
                    str(work / "out.tif"),
                    "--precision",
                    precision,
                    "--overwrite",
                    "-q",
                    "--model",
                    str(args.model),
                ],
                env,
            )
        if args.baseline:  # another checkout (its own embedded model), f32, its own cache
            commands["segment 256² f32, baseline"] = (
                [
                    sys.executable,
                    "-c",
                    probe,
                    "segment",
                    str(chip),
                    str(work / "out.tif"),
                    "--precision",
                    "f32",
                    "--overwrite",
                    "-q",
                ],
                env
                | {
                    "PYTHONPATH": str(args.baseline.resolve()),
                    "GEOFUSE_CACHE_DIR": str(work / "cache-baseline"),
                },
            )
        for cmd, cmd_env in commands.values():  # warm the cache (and the file system)
            subprocess.run(cmd, env=cmd_env, check=True, capture_output=True, cwd=work)
        times: dict[str, list[float]] = {name: [] for name in commands}
        modules: dict[str, str] = {}
        for _ in range(args.repeat):
            for name, (cmd, cmd_env) in commands.items():
                start = time.perf_counter()
                done = subprocess.run(
                    cmd, env=cmd_env, check=True, capture_output=True, text=True, cwd=work
                )  # not this checkout's folder
                times[name].append(time.perf_counter() - start)
                modules[name] = " ".join(
                    ln[len("MODULES") :].strip()
                    for ln in done.stderr.splitlines()
                    if ln.startswith("MODULES")
                )
        importtime = subprocess.run(
            [sys.executable, "-X", "importtime", *commands["segment 256² int8"][0][1:]],
            env=env,
            check=True,
            capture_output=True,
            text=True,
            cwd=work,
        ).stderr
    base = statistics.median(times["import rasterio, openvino"])
    summary = {
        name: {
            "median_s": round(statistics.median(t), 3),
            "runs_s": [round(v, 3) for v in t],
            "vs_import": round(statistics.median(t) / base, 2),
            "heavy_modules": modules.get(name, ""),
        }
        for name, t in times.items()
    }
    for name, s in summary.items():
        print(
            f"{name:<28} median {s['median_s']:.2f} s  x{s['vs_import']:.2f} of the imports"
            f"  heavy modules: {s['heavy_modules'] or 'none'}"
        )
    top = sorted(
        (
            ln
            for ln in importtime.splitlines()
            if ln.startswith("import time:") and ln.split("|")[1].strip().isdigit()
        ),
        key=lambda ln: -int(ln.split("|")[1]),
    )[:15]
    write_json_atomic(
        RUNS / f"startup-{args.name}.json",
        {
            "study": "int8",
            "kind": "startup",
            "model": args.model.name,
            "repeat": args.repeat,
            "bytecode_cache": "on (PYTHONDONTWRITEBYTECODE unset for the runs)",
            "machine": machine(),
            "commands": summary,
            "importtime_top": top,
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("choose", "accuracy", "startup"))
    parser.add_argument("--model", type=Path, default=ROOT / "geofuse/model/default.keras")
    parser.add_argument("--name", default=time.strftime("%Y%m%d-%H%M"))
    parser.add_argument("--parts", nargs="*", default=None, help="accuracy: only these parts.")
    parser.add_argument(
        "--record", action="store_true", help="accuracy: write the result into the model file."
    )
    parser.add_argument(
        "--spacenet-model",
        type=Path,
        default=Path(tempfile.gettempdir()) / "geofuse-int8-spacenet.keras",
    )
    parser.add_argument("--spacenet-minutes", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=5, help="startup: rounds.")
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="startup: also time this checkout's geofuse (f32), e.g. ../main.",
    )
    parser.add_argument(
        "--variants",
        nargs="*",
        choices=VARIANTS,
        default=None,
        help="choose: these settings only (default: all).",
    )
    args = parser.parse_args()
    {"choose": choose, "accuracy": accuracy, "startup": startup}[args.kind](args)


if __name__ == "__main__":
    main()
