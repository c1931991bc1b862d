"""Inference speed and size of the fusion U-Net in every fusion mode (model only, CPU).

For each mode it builds an untrained network (same depth, base filters and fusion width),
wraps it in the production predictor (``geofuse.segment.make_predictor``: a ``tf.function``
with a fixed batch shape), warms it up, then times ``--batches`` calls on random tiles. Modes
are timed in interleaved rounds (all modes once per round) so that background load on a shared
machine hits every mode alike; the best round per mode is reported. It prints a table: mode,
parameters, Mpx/s (wall clock), time relative to ``none`` (the plain U-Net), and the process CPU
seconds per megapixel with its ratio to ``none`` (all threads; much less sensitive than wall
time to other processes competing for the cores).

    python scripts/bench/bench_fusion.py                      # depth 4, 16 filters, 256 px, batch 4
    python scripts/bench/bench_fusion.py --tile 512 --rounds 3

With ``--models A.keras B.keras`` it times those model files instead (trained networks, their
own bands), relative to the first: e.g. a new default model against the old one,
``git show REV:geofuse/model/default.keras > old.keras``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MODES = ["none", "concat", "weighted", "weighted+gates", "attention", "cross_attention"]


def build(mode: str, args: argparse.Namespace):  # noqa: ANN201 - keras.Model
    """Network for ``mode`` (``weighted+gates`` is ``weighted`` with gates)."""
    from geofuse.model.network import build_unet
    from geofuse.model.spec import Architecture, ModelSpec
    from geofuse.training.config import TrainConfig

    fusion, _, gates = mode.partition("+")
    options = {"weighted": {"gates": bool(gates)},
               "cross_attention": {"attention_size": args.attention_size}}.get(fusion, {})
    spec = ModelSpec(bands=args.bands, classes=args.classes, arch=Architecture(
        depth=args.depth, base_filters=args.filters, fusion=fusion, fusion_width=args.width,
        fusion_levels=args.levels, fusion_options=options))
    return build_unet(spec, patch=TrainConfig.patch)  # windows of the default training chip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", default=MODES, choices=MODES)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--width", type=int, default=None, help="fusion width (default filters)")
    parser.add_argument("--levels", default="all", choices=["all", "adjacent"])
    parser.add_argument("--attention-size", type=int, default=16)
    parser.add_argument("--bands", type=int, default=3)
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--batches", type=int, default=10, help="timed calls per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=None, metavar="FILE",
                        help="Time these .keras files instead of the modes (ratios to the first).")
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from geofuse.model.modelfile import load_model
    from geofuse.segment import make_predictor

    keras.utils.set_random_seed(0)
    shape = "" if args.models else f"depth {args.depth}, base filters {args.filters}, "
    print(f"TF {tf.__version__}, {os.cpu_count()} CPUs, {shape}tile {args.tile}, "
          f"batch {args.batch}")
    networks = ({path: load_model(path).model for path in args.models} if args.models
                else {mode: build(mode, args) for mode in args.modes})
    keys = list(networks)
    predictors, params, inputs = {}, {}, {}
    rng = np.random.default_rng(0)
    for mode, model in networks.items():
        bands = int(model.inputs[0].shape[-1])
        inputs[mode] = rng.normal(size=(args.batch, args.tile, args.tile, bands)).astype("float32")
        params[mode] = model.count_params()
        predictors[mode] = make_predictor(model, args.batch, args.tile, bands)
        for _ in range(2):
            predictors[mode](inputs[mode])
    best = {mode: float("inf") for mode in keys}
    cpu = {mode: float("inf") for mode in keys}
    for _ in range(args.rounds):
        for mode in keys:
            x = inputs[mode]
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(args.batches):
                predictors[mode](x)
            best[mode] = min(best[mode], time.perf_counter() - start)
            cpu[mode] = min(cpu[mode], time.process_time() - start_cpu)
    megapixels = args.batches * args.batch * args.tile**2 / 1e6
    first = keys[0] if args.models else "none"
    base, base_cpu = best.get(first), cpu.get(first)
    width = max(16, *(len(k) for k in keys))
    print(f"{'model' if args.models else 'mode':<{width}} {'params':>9} {'Mpx/s':>7} "
          f"{'time/first' if args.models else 'time/none':>10} {'CPU s/Mpx':>10} "
          f"{'CPU/first' if args.models else 'CPU/none':>9}")
    for mode in keys:
        ratio = f"{best[mode] / base:.2f}" if base else "-"
        cpu_ratio = f"{cpu[mode] / base_cpu:.2f}" if base_cpu else "-"
        print(f"{mode:<{width}} {params[mode]:>9,} {megapixels / best[mode]:>7.2f} {ratio:>10} "
              f"{cpu[mode] / megapixels:>10.2f} {cpu_ratio:>9}")


if __name__ == "__main__":
    main()
