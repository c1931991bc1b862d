"""Commands on labelled data: ``train`` and ``evaluate``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from geofuse.cli.app import as_flags, default, handle_errors, main, quiet_tensorflow, warn
from geofuse.cli.options import (
    announce_runtime,
    build_tiling,
    grid_options,
    input_options,
    tta_option,
)
from geofuse.cli.progress import ProgressBar
from geofuse.config import FUSION_LEVELS, InputConfig, parse_bands
from geofuse.model.fusion import all_options, fusion_mode, fusion_modes
from geofuse.model.spec import Architecture
from geofuse.training.config import (
    AUTO_MEMBERS,
    AUTO_PATCH,
    CACHE_AUTO_BYTES,
    CACHES,
    CLASS_WEIGHTINGS,
    DEFAULT_BATCH,
    DEFAULT_LEARNING_RATE,
    DEFAULT_PATCH,
    DEFAULT_STEPS,
    KEEP,
    LOSSES,
    MASK_SUFFIXES,
    SAMPLING,
    SIDE_BOUNDS,
    SIDE_FACTOR,
    STRATEGIES,
    EvaluateConfig,
    LabelOptions,
    SceneSource,
    TilesSource,
    TrainConfig,
    format_duration,
    parse_duration,
)
from geofuse.training.init import FINETUNE_LEARNING_RATE, FREEZE_PARTS
from geofuse.training.labels import MASK_MODES


def label_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by ``train`` and ``evaluate``: data layout and label coding."""
    tiles = default(TilesSource, "images"), default(TilesSource, "masks")
    options = [
        click.option("--tiles", multiple=True, type=click.Path(),
                     help="Tiles folder with IMAGES/NAME.ext and MASKS/NAME.ext (repeatable)."),
        click.option("--images-dir", default=tiles[0], show_default=True,
                     help="Name of the image folder inside --tiles."),
        click.option("--masks-dir", default=tiles[1], show_default=True,
                     help="Name of the mask folder inside --tiles."),
        click.option("--image-ext", default=None, help="Image extension, e.g. .jpg."),
        click.option("--mask-ext", default=None, help="Mask extension, e.g. .png."),
        click.option("--mask-suffix", default=None,
                     help="Mask name = image stem + this, beside the image or in --masks-dir "
                          "(e.g. _mask for X.tif + X_mask.png). Default: the same name, or "
                          "one of " + ", ".join(MASK_SUFFIXES) + "."),
        click.option("--exclude", multiple=True,
                     help="Glob pattern (relative to --tiles) or file name of images to leave "
                          "out (repeatable)."),
        click.option("--scene", type=click.Path(), help="A scene to use with --labels."),
        click.option("--labels", type=click.Path(),
                     help="Labels of --scene: a mask raster or a vector file (GeoJSON, GPKG)."),
        click.option("--class-field", default=None,
                     help="Vector attribute with class ids or names (default: one class)."),
        click.option("--line-width", type=float, default=None,
                     help="Buffer width in metres for vector lines and points."),
        click.option("--classes", "classes_file", type=click.Path(dir_okay=False),
                     help="classes.json: names, colours, mask values, ignored values."),
        click.option("--ignore-value", multiple=True,
                     help="Mask value or colour (#9b9b9b) to ignore (repeatable)."),
        click.option("--class-names", default=None,
                     help="Comma-separated class names, in class-id order (e.g. "
                          "background,building), for masks or vectors that do not name them."),
        click.option("--mask-mode", type=click.Choice(MASK_MODES),
                     default=default(LabelOptions, "mask_mode"), show_default=True,
                     help="How masks encode classes: auto, class ids, or colours."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_data(tiles: tuple[str, ...], images_dir: str, masks_dir: str, image_ext: str | None,
               mask_ext: str | None, mask_suffix: str | None, exclude: tuple[str, ...],
               scene: str | None, labels: str | None, class_field: str | None,
               line_width: float | None, classes_file: str | None, class_names: str | None,
               ignore_value: tuple[str, ...], mask_mode: str,
               ) -> tuple[tuple[TilesSource | SceneSource, ...], LabelOptions]:
    """Sources and label options from the :func:`label_options` values."""
    from geofuse.training.labels import parse_ignore

    if bool(tiles) == bool(scene):
        raise click.UsageError("use --tiles DIR or --scene S.tif --labels L (one of them)")
    if scene and not labels:
        raise click.UsageError("--scene needs --labels (a mask raster or a vector file)")
    sources: tuple[TilesSource | SceneSource, ...]
    if tiles:
        sources = tuple(TilesSource(Path(t), images_dir, masks_dir, image_ext, mask_ext,
                                    exclude=exclude, mask_suffix=mask_suffix)
                        for t in tiles)
    else:
        sources = (SceneSource(scene, labels, class_field, line_width),)  # GDAL names kept
    ignore_values, ignore_colors = parse_ignore(ignore_value)
    options = LabelOptions(classes_file=Path(classes_file) if classes_file else None,
                           ignore_values=ignore_values, ignore_colors=ignore_colors,
                           mask_mode=mask_mode,
                           class_names=tuple(n.strip() for n in class_names.split(","))
                           if class_names else ())
    return sources, options


DATA_ARGS = ("tiles", "images_dir", "masks_dir", "image_ext", "mask_ext", "mask_suffix",
             "exclude", "scene", "labels", "class_field", "line_width", "classes_file",
             "class_names", "ignore_value", "mask_mode")


def architecture_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--fusion`` and every option of every registered fusion mode, plus the U-Net shape."""
    options = [
        click.option("--fusion", type=click.Choice(fusion_modes()),
                     default=default(Architecture, "fusion"), show_default=True,
                     help="Decoder fusion mode: "
                          + "; ".join(f"{m}: {fusion_mode(m).doc}" for m in fusion_modes())),
        click.option("--depth", default=default(Architecture, "depth"), show_default=True,
                     help="U-Net depth."),
        click.option("--filters", default=default(Architecture, "base_filters"),
                     show_default=True, help="Filters of the first level."),
        click.option("--fusion-width", type=click.IntRange(min=1), default=None,
                     help="Width of the aligned maps in fusion blocks. Default: --filters."),
        click.option("--fusion-levels", type=click.Choice(FUSION_LEVELS),
                     default=default(Architecture, "fusion_levels"), show_default=True,
                     help="Encoder levels each decoder level fuses: all, or its own and the "
                          "adjacent ones."),
    ]
    for option in all_options().values():
        if isinstance(option.default, bool):
            name = option.flag[2:]
            options.append(click.option(f"--{name}/--no-{name}", option.name, default=None,
                                        help=f"{option.help}  [default: {option.default}]"))
        else:
            options.append(click.option(option.flag, option.name, type=type(option.default),
                                        default=None,
                                        help=f"{option.help}  [default: {option.default}]"))
    for option in reversed(options):
        func = option(func)
    return func


def build_architecture(values: dict[str, Any]) -> Architecture:
    """Architecture from the :func:`architecture_options` values (removed from ``values``)."""
    given = {name: values.pop(name) for name in all_options()}
    return Architecture(
        depth=values.pop("depth"), base_filters=values.pop("filters"),
        fusion=values.pop("fusion"), fusion_width=values.pop("fusion_width"),
        fusion_levels=values.pop("fusion_levels"),
        fusion_options={k: v for k, v in given.items() if v is not None},
    )


class PatchSide(click.ParamType):
    """A chip side in pixels, or ``auto``."""

    name = "pixels|auto"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int | str:
        """``auto``, or the side as a positive int (anything else fails)."""
        if value == AUTO_PATCH or isinstance(value, int):
            return value
        try:
            side = int(value)
        except ValueError:
            side = 0
        if side < 1:
            self.fail(f"expected a positive number of pixels or {AUTO_PATCH}, got {value!r}",
                      param, ctx)
        return side


def _train_default(name: str) -> Any:
    return default(TrainConfig, name)


@main.command()
@label_options
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False),
              help="Model file to write (.keras).")
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="History, curves, metrics and checkpoints. Default: OUT with .train.")
@click.option("--bands", default=None, help="1-based bands to use. Default: all but alpha.")
@architecture_options
@click.option("--patch", type=PatchSide(), default=_train_default("patch"), show_default=True,
              help=f"Training chip side in pixels, or {AUTO_PATCH}: {SIDE_FACTOR} times the "
                   "area-weighted side of the rarest class's objects in the labels, "
                   f"{SIDE_BOUNDS[0]} to {SIDE_BOUNDS[1]} px.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help=f"Chips per step. Default: as many pixels as {DEFAULT_BATCH} chips of "
                   f"{DEFAULT_PATCH} px in chips of the side --patch {AUTO_PATCH} chose; "
                   f"{DEFAULT_BATCH} with a side given.")
@click.option("--time-limit", default=None,
              help="Training time, e.g. 90s, 10m, 1h: the learning-rate schedule spans it, "
                   "or the steps the data should get (as the default, without its maximum) "
                   "if the run reaches them first. Default: no time limit, the default steps.")
@click.option("--members", type=click.IntRange(min=1), default=None,
              help="Networks to train one after another (seeds SEED, SEED+1, ...) and average "
                   "into the model file; inference costs as many times a network. Default: "
                   f"1, or with --time-limit up to {AUTO_MEMBERS}: another while the first "
                   "network's time is left after it reaches its steps (small data).")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Number of epochs (a fixed number of steps, reproducible); with "
                   "--time-limit, an upper bound. Default: a number of steps from the amount "
                   f"of labelled data (at most {DEFAULT_STEPS[2]:,}), so a slower machine "
                   "trains longer, not less, and small data is not overfitted.")
@click.option("--steps", "steps_per_epoch", default=_train_default("steps_per_epoch"),
              show_default=True, help="Steps per epoch.")
@click.option("--lr", "learning_rate", type=click.FloatRange(min=0.0, min_open=True),
              default=None,
              help=f"Adam peak learning rate (cosine decay). Default: {DEFAULT_LEARNING_RATE:g}, "
                   f"or {FINETUNE_LEARNING_RATE:g} with --init.")
@click.option("--weight-decay", default=_train_default("weight_decay"), show_default=True,
              type=click.FloatRange(min=0.0, max=1.0, max_open=True),
              help="Decoupled weight decay of the convolution kernels (0: none).")
@click.option("--ema", default=_train_default("ema"), show_default=True,
              type=click.FloatRange(min=0.0, max=1.0, max_open=True),
              help="Write an exponential moving average of the weights with this momentum "
                   "(0: the last weights).")
@click.option("--deep-supervision", default=_train_default("deep_supervision"),
              show_default=True, type=click.FloatRange(min=0.0, max=1.0, max_open=True),
              help="Train each decoder level L below full resolution through its own output "
                   "too, its loss weighing DEEP_SUPERVISION**L (0: off; 0.5 as nnU-Net); "
                   "the model file has the network alone.")
@click.option("--loss", type=click.Choice(LOSSES), default=_train_default("loss"),
              show_default=True, help="Loss.")
@click.option("--class-weights", default=_train_default("class_weights"), show_default=True,
              help="auto (inverse square-root frequency), inverse (inverse frequency; both at "
                   "most 10), none, or comma-separated weights.")
@click.option("--augment/--no-augment", default=_train_default("augment"), show_default=True,
              help="8 flips/rotations and brightness/contrast jitter.")
@click.option("--jitter", default=_train_default("jitter"), show_default=True,
              type=click.FloatRange(min=0.0, max=1.0, max_open=True),
              help="Range of the brightness/contrast jitter of --augment (normalised units).")
@click.option("--zoom", default=_train_default("zoom"), show_default=True,
              type=click.FloatRange(min=0.0, max=1.0),
              help="Random zoom of --augment: chips cover 1/(1+ZOOM) to 1+ZOOM times the "
                   "patch side, resampled to the patch (0: off).")
@click.option("--rotate", default=_train_default("rotate"), show_default=True,
              type=click.FloatRange(min=0.0, max=45.0),
              help="Random rotation of --augment in degrees: chips are turned by an angle in "
                   "[-ROTATE, ROTATE] before the 8 flips/rotations; 45 gives every angle "
                   "(0: off).")
@click.option("--shadow", default=_train_default("shadow"), show_default=True,
              type=click.FloatRange(min=0.0, max=1.0),
              help="Share of chips --augment darkens inside a random soft-edged ellipse to "
                   "0.3-0.7 of their values, as a cast shadow would (0: off).")
@click.option("--cutmix", default=_train_default("cutmix"), show_default=True,
              type=click.FloatRange(min=0.0, max=1.0),
              help="Share of chips --augment pastes a rectangle of another chip into, image "
                   "and labels (CutMix: about 1/4 to 1/2 of the chip; 0: off).")
@click.option("--sampling", type=click.Choice(SAMPLING), default=_train_default("sampling"),
              show_default=True,
              help="balanced: random chip positions, half of them moved onto a pixel of a "
                   "class drawn uniformly (rare classes seen as often as common ones); random: "
                   "positions only; grid: a shuffled grid.")
@click.option("--val-fraction", default=_train_default("val_fraction"), show_default=True,
              help="Share of tiles / scene blocks held out for validation.")
@click.option("--val-tiles", default=None,
              help="Comma-separated tiles to validate on (file names, stems or globs) instead "
                   "of a random --val-fraction.")
@click.option("--val-block", type=int, default=None,
              help="Side of scene validation blocks. Default: max(4 x patch, 256).")
@click.option("--patience", default=_train_default("patience"), show_default=True,
              help="Stop after this many epochs without improvement (0: never).")
@click.option("--keep", type=click.Choice(KEEP), default=_train_default("keep"),
              show_default=True,
              help="Weights written: the last (end of the annealed schedule) or the best by "
                   "the smoothed validation score in the second half of the run.")
@click.option("--seed", default=_train_default("seed"), show_default=True, help="Random seed.")
@click.option("--init", default=None, metavar="MODEL|default",
              help="Start from this model's weights (fine-tuning; 'default': the embedded "
                   "model). Its architecture is used; classes of the same name keep their "
                   "head rows (--class-names names yours); other band counts adapt the first "
                   "convolution. Default: random weights.")
@click.option("--freeze", type=click.Choice(FREEZE_PARTS), default=_train_default("freeze"),
              show_default=True,
              help="With --init: keep the encoder (and bottleneck) as the model had them.")
@click.option("--resume", is_flag=True, help="Continue from the run folder's last checkpoint.")
@click.option("--strategy", type=click.Choice(STRATEGIES), default=_train_default("strategy"),
              show_default=True,
              help="tf.distribute: mirrored over local devices, or multi-worker over the "
                   "TF_CONFIG cluster (run the same command on every worker; the chief writes "
                   "the model).")
@click.option("--cache", type=click.Choice(CACHES), default=_train_default("cache"),
              show_default=True,
              help=f"Hold the data in memory (auto: when it takes at most "
                   f"{CACHE_AUTO_BYTES >> 30} GiB, else non-GeoTIFF images only).")
@click.option("--overwrite", is_flag=True, help="Replace an existing model file.")
@click.option("--quiet", "-q", is_flag=True,
              help="No per-epoch output: only warnings and the final line (the model file "
                   "and its validation scores).")
@handle_errors
def train(**values: Any) -> None:
    """Train a model on labelled tiles or a scene with labels; write one .keras file.

    For example `geofuse train --tiles data/ --out model.keras` or `geofuse train --scene
    s.tif --labels buildings.gpkg --out model.keras`.
    """
    sources, labels = build_data(**{k: values.pop(k) for k in DATA_ARGS})
    arch = build_architecture(values)
    quiet = values.pop("quiet")
    class_weights = values.pop("class_weights")
    weights: Any = class_weights
    if class_weights not in CLASS_WEIGHTINGS:
        try:
            weights = tuple(float(w) for w in class_weights.split(","))
        except ValueError:
            raise click.BadParameter(f"expected {', '.join(CLASS_WEIGHTINGS)} or numbers, "
                                     f"got {class_weights!r}",
                                     param_hint="--class-weights") from None
    run_dir = values.pop("run_dir")
    time_limit = values.pop("time_limit")
    val_tiles = values.pop("val_tiles")
    config = TrainConfig(
        time_limit=parse_duration(time_limit) if time_limit else None,
        val_tiles=tuple(v.strip() for v in val_tiles.split(",") if v.strip()) if val_tiles
        else (),
        sources=sources, out=Path(values.pop("out")), labels=labels, arch=arch,
        run_dir=Path(run_dir) if run_dir else None, bands=parse_bands(values.pop("bands")),
        class_weights=weights, **values,
    )
    quiet_tensorflow()
    from geofuse.training.train import train as run_training

    def report(epoch: int, logs: Any) -> None:
        if quiet:
            return
        keys = ("loss", "mean_iou", "val_loss", "val_mean_iou")
        shown = "  ".join(f"{k} {logs[k]:.4f}" for k in keys if k in logs)
        if logs.get("budget"):
            when = f"{logs['elapsed']:.0f}/{logs['budget']:.0f} s"
            if logs.get("budget_steps"):
                when += f", step {int(logs['step']):,}/{int(logs['budget_steps']):,}"
        elif logs.get("budget_steps") and logs.get("fraction"):
            done, total = logs["fraction"], int(logs["budget_steps"])
            left = logs["elapsed"] * (1.0 - done) / done
            when = f"step {round(done * total):,}/{total:,}, about {format_duration(left)} left"
        else:
            when = f"{epoch}/{config.epochs}"
        network = f"network {logs['member']}, " if logs.get("member", 1) > 1 else ""
        click.echo(f"{network}epoch {epoch} ({when})  {shown}", err=True)

    def notify(text: str) -> None:
        if text.startswith("warning: "):
            warn(text[len("warning: "):])
        elif not quiet:
            click.echo(as_flags(text), err=True)

    result = run_training(config, report=report, notify=notify)
    if result.model is None:  # a multi-worker run's non-chief worker: the chief writes
        if not quiet:
            click.echo(f"worker done after {result.epochs} epochs; the chief writes "
                       f"{config.out}", err=True)
    else:
        click.echo(trained_line(result, config.keep), err=True)


def trained_line(result: Any, keep: str) -> str:
    """The last line of ``train``: the model file, its weights and its validation scores.

    The scores are those of the classes the validation labels hold
    (:func:`~geofuse.training.metrics.score_line`).
    """
    from geofuse.training.metrics import score_line

    validation = result.metrics.get("validation") or {}
    started = result.metrics.get("start_validation") or {}  # a fine-tuning run's start
    members = result.metrics.get("members", 1)
    return (
        f"{result.model}: "
        + (f"the average of {members} networks ({result.epochs} epochs in all), "
           if members > 1 else
           f"weights of epoch {result.kept_epoch} of {result.epochs} ({keep}), ")
        + (f"validation {score_line(validation)}, " if validation else "no validation data, ")
        + (f"{score_line(started)} before training, " if started else "")
        + f"{result.seconds:.0f} s (history, curves, metrics in {result.run_dir})"
    )


@main.command()
@label_options
@click.option("--model", "model_path", type=click.Path(dir_okay=False),
              help="Model file (.keras), or 'default': the embedded model (the default).")
@click.option("--report", type=click.Path(dir_okay=False), default=None,
              help="Write the JSON report here (and the confusion matrix as .png beside it).")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Confusion-matrix PNG. Default: the report path with .png.")
@grid_options
@tta_option
@click.option("--seam-width", default=default(EvaluateConfig, "seam_width"), show_default=True,
              help="Half-width in pixels of the band around tile seams (scene only).")
@click.option("--label-class", default=None,
              help="The model class that one-class masks (0 and 1, or 0 and 255) label: "
                   "scored as that class against the rest.")
@click.option("--overwrite", is_flag=True, help="Replace existing report files.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@input_options
@handle_errors
def evaluate(model_path: str | None, report: str | None, plot: str | None, tile: int,
             exact_tile: bool, overlap: int | None, blend: str, batch_size: int, bands: str | None,
             runtime: str, precision: str, calibration: str | None, tta: str, seam_width: int,
             label_class: str | None, overwrite: bool, quiet: bool, adapt: InputConfig,
             **data: Any) -> None:
    """Score a model on labelled tiles or a labelled scene: IoU, F1, precision, recall.

    Only the classes the labels hold are scored. One-class masks (a building footprint mask
    of 0 and 1, say) are scored as their class against the rest with --label-class.
    """
    sources, labels = build_data(**data)
    if len(sources) > 1:
        raise click.UsageError("evaluate takes one --tiles folder")
    config = EvaluateConfig(
        source=sources[0], model=Path(model_path) if model_path else None, labels=labels,
        tiling=build_tiling(tile, overlap, blend, batch_size, bands, runtime, precision,
                            exact_tile, calibration),
        seam_width=seam_width, report=Path(report) if report else None,
        plot=Path(plot) if plot else None, overwrite=overwrite, input=adapt, tta=tta,
        label_class=label_class,
    )
    quiet_tensorflow()
    announce_runtime(config.tiling, quiet, model_path)
    from geofuse.training.evaluate import evaluate as run_evaluation

    bar = ProgressBar("images", quiet)
    try:
        result = run_evaluation(config, progress=bar, notify=warn)
    finally:
        bar.close()
    for line in evaluation_lines(result.report):
        click.echo(line)


def evaluation_lines(r: dict[str, Any], most_images: int = 20) -> list[str]:
    """What ``evaluate`` prints for its report ``r``.

    The classes the labels cover, a table of every class (``-`` where a class has no labelled
    pixels), the mean over the labelled classes, the class sets' false positives, per image
    (up to ``most_images``) and the seam metric.
    """
    names = list(r["classes"])
    predicted = [sum(column) for column in zip(*r["confusion_matrix"], strict=True)]
    for entry in r.get("class_sets", []):
        predicted = [p + entry["predicted"][n] for p, n in zip(predicted, names, strict=True)]
    labelled = r.get("labelled_classes", [])
    lines = [f"labels cover: {', '.join(labelled) if labelled else 'no class'}"
             + "".join(f"; {s['name']}: any of {', '.join(s['classes'])}"
                       for s in r.get("class_sets", []))]
    lines.append(f"{'class':<16}{'IoU':>8}{'F1':>8}{'prec':>8}{'recall':>8}"
                 f"{'labelled':>12}{'predicted':>12}")
    for (name, c), guessed in zip(r["classes"].items(), predicted, strict=True):
        cells = [c[k] for k in ("iou", "f1", "precision", "recall")]
        text = "".join(f"{v:>8.4f}" if v is not None else f"{'-':>8}" for v in cells)
        lines.append(f"{name:<16}{text}{c['support']:>12}{guessed:>12}")
    if r["mean_iou"] is None:
        lines.append("no labelled pixels to score")
    else:
        what = labelled[0] if len(labelled) == 1 else f"the {len(labelled)} labelled classes"
        lines.append(f"mean IoU {r['mean_iou']:.4f} over {what}  pixels {r['pixels']}"
                     + (f"  pixel accuracy {r['accuracy']:.4f}" if r["accuracy"] is not None
                        else ""))
    for entry in r.get("class_sets", []):
        wrong = ", ".join(f"{n} {v}" for n, v in entry["false_positives"].items()) or "none"
        lines.append(f"{entry['name']}: {entry['pixels']} px, predicted outside the set "
                     f"(false positives): {wrong}")
    items = r.get("items", [])
    if 1 < len(items) <= most_images:
        for item in items:
            ious = ", ".join(f"{n} {v:.4f}" for n, v in item["iou"].items()
                             if n in labelled and v is not None)
            lines.append(f"  {Path(item['image']).name}: " + (ious or "no labelled pixels"))
    seams = r.get("seams")
    if seams and seams["seam"]["mean_iou"] is not None:
        lines.append(f"seam band ({seams['width']} px) mean IoU {seams['seam']['mean_iou']:.4f}"
                     f"  interior {seams['interior']['mean_iou']:.4f}")
    return lines
