"""The ``geofuse`` command line: thin click commands over the library.

Each command parses options, builds a config and calls one library function. TensorFlow is
imported only inside the commands that need it, so ``geofuse --help`` is instant. Any
:class:`~geofuse.errors.GeofuseError` becomes a one-line message and exit code 1.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from geofuse import __version__
from geofuse.config import (
    BLEND_MODES,
    FUSION_LEVELS,
    OVERLAP_DIVISOR,
    PROBABILITY_DTYPES,
    TTA_MODES,
    VECTOR_FORMATS,
    Architecture,
    SegmentConfig,
    TilingConfig,
    VectorizeConfig,
    parse_bands,
)
from geofuse.errors import GeofuseError
from geofuse.fusion import all_options, fusion_mode, fusion_modes
from geofuse.training.config import (
    CACHES,
    LOSSES,
    SAMPLING,
    STRATEGIES,
    EvaluateConfig,
    LabelOptions,
    SceneSource,
    TilesSource,
    TrainConfig,
)
from geofuse.training.labels import MASK_MODES


def default(cls: Any, name: str) -> Any:
    """The library's default of field ``name`` of the dataclass ``cls`` (shown by --help)."""
    f = cls.__dataclass_fields__[name]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _quiet_tensorflow() -> None:
    """Import TensorFlow with its start-up banner hidden, unless --verbose."""
    from geofuse.tfimport import import_tensorflow

    logging.getLogger("absl").setLevel(logging.ERROR)
    import_tensorflow(quiet=not logging.getLogger().isEnabledFor(logging.INFO))


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn GeofuseError (and MemoryError/KeyboardInterrupt) into one-line click errors."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except GeofuseError as exc:
            raise click.ClickException(str(exc)) from None
        except MemoryError:
            raise click.ClickException(
                "out of memory: try a smaller --tile or --batch-size"
            ) from None

    return wrapper


class ProgressBar:
    """A click progress bar fed by the library's ``progress(done, total)`` callback."""

    def __init__(self, label: str, quiet: bool) -> None:
        self.label = label
        self.quiet = quiet
        self.bar: Any = None
        self.done = 0

    def __call__(self, done: int, total: int) -> None:
        """Advance the bar to ``done`` of ``total``."""
        if self.quiet:
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label=self.label, file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        """Finish the bar line."""
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


def grid_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Tile grid options shared by ``segment``, ``batch`` and ``evaluate``."""
    options = [
        click.option("--tile", default=default(TilingConfig, "tile"), show_default=True,
                     help="Tile side in pixels (a multiple of 2**depth of the model)."),
        click.option("--overlap", type=int, default=None,
                     help=f"Pixels shared by neighbouring tiles. Default: tile / "
                          f"{OVERLAP_DIVISOR}."),
        click.option("--blend", type=click.Choice(BLEND_MODES),
                     default=default(TilingConfig, "blend"), show_default=True,
                     help="Weighted blending or keep tile cores."),
        click.option("--batch-size", default=default(TilingConfig, "batch_size"),
                     show_default=True, help="Tiles per model call."),
        click.option("--bands", default=None,
                     help="1-based bands to use, e.g. 4,3,2. Default: all but alpha."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_tiling(tile: int, overlap: int | None, blend: str, batch_size: int,
                 bands: str | None) -> TilingConfig:
    """TilingConfig from the :func:`grid_options` values."""
    return TilingConfig(tile=tile, overlap=overlap, blend=blend, batch_size=batch_size,
                        bands=parse_bands(bands))


def tiling_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by ``segment`` and ``batch``."""
    options = [
        click.option("--model", "model_path", type=click.Path(dir_okay=False),
                     help="Model file (.keras). Default: the embedded model."),
        grid_options,
        click.option("--probability-dtype", type=click.Choice(PROBABILITY_DTYPES),
                     default=default(SegmentConfig, "probability_dtype"), show_default=True,
                     help="uint8 stores p*254 (nodata 255); float32 stores p (nodata NaN)."),
        click.option("--tta", type=click.Choice(TTA_MODES), default=default(SegmentConfig, "tta"),
                     is_flag=False, flag_value="all", show_default=True,
                     help="Test-time augmentation: average the predictions of the 8 "
                          "flips/rotations (--tta or --tta all) or of 4 (flips, rotations). "
                          "Costs that many model passes per tile."),
        click.option("--overwrite", is_flag=True, help="Replace existing outputs."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_segment_config(
    tile: int, overlap: int | None, blend: str, batch_size: int, bands: str | None,
    probabilities: str | None, probability_dtype: str, overwrite: bool, *,
    tta: str = "none", aoi: str | None = None, vector: str | None = None,
    vectorize: VectorizeConfig | None = None, preview: str | None = None,
) -> SegmentConfig:
    """SegmentConfig from command-line values."""
    return SegmentConfig(
        tiling=build_tiling(tile, overlap, blend, batch_size, bands),
        probabilities=Path(probabilities) if probabilities else None,
        probability_dtype=probability_dtype,
        overwrite=overwrite,
        tta=tta,
        aoi=Path(aoi) if aoi else None,
        vector=Path(vector) if vector else None,
        vectorize=vectorize or VectorizeConfig(),
        preview=Path(preview) if preview else None,
    )


def vector_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Polygon options shared by ``vectorize`` and ``segment --vector``."""
    options = [
        click.option("--simplify", type=click.FloatRange(min=0),
                     default=default(VectorizeConfig, "simplify"), show_default=True,
                     help="Simplification tolerance in pixels (1.5 = 1.5 x the pixel size); "
                          "0 keeps the exact pixel outlines."),
        click.option("--min-area", type=click.FloatRange(min=0),
                     default=default(VectorizeConfig, "min_area"), show_default=True,
                     help="Drop polygons smaller than this many square metres."),
        click.option("--classes", default=None,
                     help="Classes to vectorize, by name or id, e.g. building,2, or 'all'. "
                          "Default: every class except one named 'background'."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_vectorize_config(simplify: float, min_area: float, classes: str | None,
                           fmt: str | None = None, overwrite: bool = False) -> VectorizeConfig:
    """VectorizeConfig from command-line values."""
    chosen = tuple(c for c in classes.split(",") if c.strip()) if classes else None
    return VectorizeConfig(simplify=simplify, min_area=min_area, classes=chosen or None,
                           format=fmt, overwrite=overwrite)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="geofuse")
@click.option("--verbose", "-v", is_flag=True, help="Log progress details to stderr.")
def main(verbose: bool) -> None:
    """Segment satellite and aerial GeoTIFFs with a multi-level feature-fusion U-Net."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@main.command()
@click.argument("scene", type=click.Path())
@click.argument("out", type=click.Path())
@tiling_options
@click.option("--probabilities", type=click.Path(dir_okay=False),
              help="Also write per-class probabilities to this GeoTIFF.")
@click.option("--aoi", type=click.Path(dir_okay=False),
              help="Area of interest (any vector file, any CRS): only tiles touching it are "
                   "read and predicted; pixels outside it are nodata.")
@click.option("--vector", type=click.Path(dir_okay=False),
              help="Also write polygons of the mask (.gpkg or .geojson).")
@vector_options
@click.option("--preview", type=click.Path(dir_okay=False),
              help="Also write a quick-look PNG: the scene, the mask and a legend.")
@handle_errors
def segment(scene: str, out: str, model_path: str | None, tile: int, overlap: int | None,
            blend: str,
            batch_size: int, bands: str | None, probability_dtype: str, tta: str, overwrite: bool,
            quiet: bool, probabilities: str | None, aoi: str | None, vector: str | None,
            simplify: float, min_area: float, classes: str | None, preview: str | None) -> None:
    """Segment SCENE into a class mask OUT (same CRS, transform and size; nodata 255)."""
    config = build_segment_config(
        tile, overlap, blend, batch_size, bands, probabilities, probability_dtype, overwrite,
        tta=tta, aoi=aoi, vector=vector, preview=preview,
        vectorize=build_vectorize_config(simplify, min_area, classes),
    )
    _quiet_tensorflow()
    from geofuse.segment import segment_scene

    bar = ProgressBar("tiles", quiet)
    try:
        result = segment_scene(scene, out, model_path, config, progress=bar)
    finally:
        bar.close()
    if not quiet:
        tiles = f"{result.tiles} tiles"
        if result.tiles != result.grid_tiles:
            tiles += f" of {result.grid_tiles} (area of interest)"
        if result.tta_passes > 1:
            tiles += (f" x {result.tta_passes} TTA passes = "
                      f"{result.tiles * result.tta_passes} model passes")
        click.echo(
            f"{result.mask}: {result.width}x{result.height} px, {tiles}, "
            f"{result.seconds:.1f} s ({result.megapixels / result.seconds:.2f} Mpx/s)",
            err=True,
        )
        if result.vector is not None:
            click.echo(f"{result.vector}: {result.polygons} polygons", err=True)
        if result.preview is not None:
            click.echo(f"{result.preview}: quick-look", err=True)


@main.command()
@click.argument("in_dir", type=click.Path(file_okay=False))
@click.argument("out_dir", type=click.Path(file_okay=False))
@tiling_options
@click.option("--probabilities", is_flag=True,
              help="Also write per-class probabilities as NAME.probs.tif beside each mask.")
@click.option("--pattern", default="*.tif", show_default=True, help="Scene file name pattern.")
@click.option("--recursive", "-r", is_flag=True,
              help="Search sub-folders too; their structure is mirrored under OUT_DIR.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes of the local Dask cluster.  [default: 1]")
@click.option("--scheduler", default=None,
              help="Run on an existing Dask cluster instead, e.g. tcp://host:8786.")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Skip scenes whose outputs are complete; --no-resume (or --overwrite) "
                   "redoes and replaces everything.")
@handle_errors
def batch(in_dir: str, out_dir: str, model_path: str | None, tile: int, overlap: int | None,
          blend: str, batch_size: int, bands: str | None, probability_dtype: str, tta: str,
          overwrite: bool, quiet: bool, probabilities: bool, pattern: str, recursive: bool,
          workers: int | None, scheduler: str | None, resume: bool) -> None:
    """Segment every scene in IN_DIR into OUT_DIR, one Dask task per scene.

    IN_DIR/a/b.tif becomes OUT_DIR/a/b.tif. OUT_DIR/geofuse-report.json lists every scene
    (done, skipped or failed, with the reason). Exit code 1 if any scene failed.
    """
    if workers is not None and scheduler is not None:
        raise click.UsageError("use either --workers (local cluster) or --scheduler, not both")
    import distributed  # noqa: F401  (sets its own logger levels on import)

    from geofuse.batch import BatchConfig, segment_directory

    if not logging.getLogger().isEnabledFor(logging.INFO):  # Dask's chatter only with -v
        logging.getLogger("distributed").setLevel(logging.ERROR)

    config = BatchConfig(
        segment=build_segment_config(tile, overlap, blend, batch_size, bands, None,
                                     probability_dtype, overwrite, tta=tta),
        pattern=pattern, recursive=recursive, probabilities=probabilities,
        resume=resume and not overwrite, workers=workers or 1, scheduler=scheduler,
    )
    bar = ProgressBar("scenes", quiet)
    try:
        report = segment_directory(in_dir, out_dir, model_path, config, progress=bar)
    finally:
        bar.close()
    summary = report.summary()
    for line in summary if not quiet else summary[1:]:
        click.echo(line, err=True)
    if report.failed:
        click.get_current_context().exit(1)


@main.command()
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def info(path: str, as_json: bool) -> None:
    """Describe a model file (.keras) or a raster scene."""
    _quiet_tensorflow()  # a weighted-fusion model is loaded to read its level weights
    from geofuse.inspect import describe

    facts = describe(Path(path))
    if as_json:
        click.echo(json.dumps(facts, indent=2, default=str))
        return
    for key, value in facts.items():
        if isinstance(value, dict):
            click.echo(f"{key}:")
            for k, v in value.items():
                click.echo(f"  {k}: {v}")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            click.echo(f"{key}:")
            for item in value:
                click.echo("  - " + ", ".join(f"{k}={v}" for k, v in item.items()))
        else:
            click.echo(f"{key}: {value}")


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
        click.option("--mask-mode", type=click.Choice(MASK_MODES),
                     default=default(LabelOptions, "mask_mode"), show_default=True,
                     help="How masks encode classes: auto, class ids, or colours."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_data(tiles: tuple[str, ...], images_dir: str, masks_dir: str, image_ext: str | None,
               mask_ext: str | None, scene: str | None, labels: str | None,
               class_field: str | None, line_width: float | None, classes_file: str | None,
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
        sources = tuple(TilesSource(Path(t), images_dir, masks_dir, image_ext, mask_ext)
                        for t in tiles)
    else:
        sources = (SceneSource(Path(scene), Path(labels), class_field, line_width),)
    ignore_values, ignore_colors = parse_ignore(ignore_value)
    options = LabelOptions(classes_file=Path(classes_file) if classes_file else None,
                           ignore_values=ignore_values, ignore_colors=ignore_colors,
                           mask_mode=mask_mode)
    return sources, options


DATA_ARGS = ("tiles", "images_dir", "masks_dir", "image_ext", "mask_ext", "scene", "labels",
             "class_field", "line_width", "classes_file", "ignore_value", "mask_mode")


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
@click.option("--patch", default=_train_default("patch"), show_default=True,
              help="Training chip side in pixels.")
@click.option("--batch-size", default=_train_default("batch_size"), show_default=True,
              help="Chips per step.")
@click.option("--epochs", default=_train_default("epochs"), show_default=True,
              help="Maximum epochs.")
@click.option("--steps", "steps_per_epoch", default=_train_default("steps_per_epoch"),
              show_default=True, help="Steps per epoch.")
@click.option("--lr", "learning_rate", default=_train_default("learning_rate"),
              show_default=True, help="Adam learning rate (cosine decay).")
@click.option("--loss", type=click.Choice(LOSSES), default=_train_default("loss"),
              show_default=True, help="Loss.")
@click.option("--class-weights", default=_train_default("class_weights"), show_default=True,
              help="auto (inverse sqrt frequency), none, or comma-separated weights.")
@click.option("--augment/--no-augment", default=_train_default("augment"), show_default=True,
              help="8 flips/rotations and brightness/contrast jitter.")
@click.option("--sampling", type=click.Choice(SAMPLING), default=_train_default("sampling"),
              show_default=True, help="Random chip positions or a shuffled grid.")
@click.option("--val-fraction", default=_train_default("val_fraction"), show_default=True,
              help="Share of tiles / scene blocks held out for validation.")
@click.option("--val-block", type=int, default=None,
              help="Side of scene validation blocks. Default: max(4 x patch, 256).")
@click.option("--patience", default=_train_default("patience"), show_default=True,
              help="Stop after this many epochs without improvement (0: never).")
@click.option("--seed", default=_train_default("seed"), show_default=True, help="Random seed.")
@click.option("--resume", is_flag=True, help="Continue from the run folder's last checkpoint.")
@click.option("--strategy", type=click.Choice(STRATEGIES), default=_train_default("strategy"),
              show_default=True,
              help="tf.distribute: mirrored over local devices, multi-worker via TF_CONFIG.")
@click.option("--cache", type=click.Choice(CACHES), default=_train_default("cache"),
              show_default=True, help="Hold images in memory (auto: non-GeoTIFF ones).")
@click.option("--overwrite", is_flag=True, help="Replace an existing model file.")
@click.option("--quiet", "-q", is_flag=True, help="No per-epoch output.")
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
    if class_weights not in ("auto", "none"):
        try:
            weights = tuple(float(w) for w in class_weights.split(","))
        except ValueError:
            raise click.BadParameter(f"expected auto, none or numbers, got {class_weights!r}",
                                     param_hint="--class-weights") from None
    run_dir = values.pop("run_dir")
    config = TrainConfig(
        sources=sources, out=Path(values.pop("out")), labels=labels, arch=arch,
        run_dir=Path(run_dir) if run_dir else None, bands=parse_bands(values.pop("bands")),
        class_weights=weights, **values,
    )
    epochs = config.epochs
    _quiet_tensorflow()
    from geofuse.training.train import train as run_training

    def report(epoch: int, logs: Any) -> None:
        if quiet:
            return
        keys = ("loss", "mean_iou", "val_loss", "val_mean_iou")
        shown = "  ".join(f"{k} {logs[k]:.4f}" for k in keys if k in logs)
        click.echo(f"epoch {epoch}/{epochs}  {shown}", err=True)

    result = run_training(config, report=report)
    if not quiet:
        validation = result.metrics.get("validation") or {}
        score = validation.get("mean_iou")
        click.echo(
            f"{result.model}: best epoch {result.best_epoch} of {result.epochs}, "
            + (f"validation mean IoU {score:.4f}, " if score is not None else "")
            + f"{result.seconds:.0f} s (history, curves, metrics in {result.run_dir})",
            err=True,
        )


@main.command()
@label_options
@click.option("--model", "model_path", type=click.Path(dir_okay=False),
              help="Model file (.keras). Default: the embedded model.")
@click.option("--report", type=click.Path(dir_okay=False), default=None,
              help="Write the JSON report here (and the confusion matrix as .png beside it).")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Confusion-matrix PNG. Default: the report path with .png.")
@grid_options
@click.option("--seam-width", default=default(EvaluateConfig, "seam_width"), show_default=True,
              help="Half-width in pixels of the band around tile seams (scene only).")
@click.option("--overwrite", is_flag=True, help="Replace existing report files.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@handle_errors
def evaluate(model_path: str | None, report: str | None, plot: str | None, tile: int,
             overlap: int | None, blend: str, batch_size: int, bands: str | None,
             seam_width: int, overwrite: bool, quiet: bool, **data: Any) -> None:
    """Score a model on labelled tiles or a labelled scene: IoU, F1, precision, recall."""
    sources, labels = build_data(**data)
    if len(sources) > 1:
        raise click.UsageError("evaluate takes one --tiles folder")
    config = EvaluateConfig(
        source=sources[0], model=Path(model_path) if model_path else None, labels=labels,
        tiling=build_tiling(tile, overlap, blend, batch_size, bands),
        seam_width=seam_width, report=Path(report) if report else None,
        plot=Path(plot) if plot else None, overwrite=overwrite,
    )
    _quiet_tensorflow()
    from geofuse.training.evaluate import evaluate as run_evaluation

    bar = ProgressBar("images", quiet)
    try:
        result = run_evaluation(config, progress=bar)
    finally:
        bar.close()
    r = result.report
    click.echo(f"{'class':<16}{'IoU':>8}{'F1':>8}{'prec':>8}{'recall':>8}{'pixels':>12}")
    for name, c in r["classes"].items():
        cells = [c[k] for k in ("iou", "f1", "precision", "recall")]
        text = "".join(f"{v:>8.4f}" if v is not None else f"{'-':>8}" for v in cells)
        click.echo(f"{name:<16}{text}{c['support']:>12}")
    mean = r["mean_iou"]
    click.echo(f"mean IoU {mean:.4f}  accuracy {r['accuracy']:.4f}  pixels {r['pixels']}"
               if mean is not None else "no labelled pixels to score")
    seams = r.get("seams")
    if seams and seams["seam"]["mean_iou"] is not None:
        click.echo(f"seam band ({seams['width']} px) mean IoU {seams['seam']['mean_iou']:.4f}"
                   f"  interior {seams['interior']['mean_iou']:.4f}")


@main.command()
@click.argument("mask", type=click.Path())
@click.argument("out", type=click.Path())
@vector_options
@click.option("--probabilities", type=click.Path(dir_okay=False),
              help="Per-class probabilities of the mask (from segment): adds mean_prob.")
@click.option("--format", "fmt", type=click.Choice(VECTOR_FORMATS), default=None,
              help="Output format. Default: from the extension (.gpkg, .geojson).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@handle_errors
def vectorize(mask: str, out: str, simplify: float, min_area: float, classes: str | None,
              probabilities: str | None, fmt: str | None, overwrite: bool, quiet: bool) -> None:
    """Turn the class MASK into polygons OUT (GeoPackage or GeoJSON, in the mask's CRS).

    Attributes: class_id, class_name, pixels, area_m2 (ellipsoidal) and, with
    --probabilities, mean_prob. The mask's nodata never becomes polygons.
    """
    from geofuse.vectorize import vectorize_mask

    config = build_vectorize_config(simplify, min_area, classes, fmt, overwrite)
    bar = ProgressBar("rows", quiet)
    try:
        result = vectorize_mask(mask, out, config, probabilities, progress=bar)
    finally:
        bar.close()
    if not quiet:
        per_class = ", ".join(f"{n} {name}" for name, n in result.class_counts.items())
        click.echo(
            f"{result.path}: {result.polygons} polygons" + (f" ({per_class})" if per_class else "")
            + (f", {result.dropped} under --min-area dropped" if result.dropped else "")
            + f", {result.seconds:.1f} s",
            err=True,
        )


@main.command()
@click.argument("scene", type=click.Path())
@click.argument("mask", type=click.Path())
@click.argument("out", type=click.Path())
@click.option("--size", type=click.IntRange(min=16), default=1024, show_default=True,
              help="Longest side of the picture in pixels (big scenes are read from overviews).")
@click.option("--bands", default=None,
              help="Bands shown as RGB (three) or grey (one), e.g. 4,3,2. "
                   "Default: the first three bands, or the first.")
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Opacity of the class colours.")
@click.option("--overwrite", is_flag=True, help="Replace an existing picture.")
@handle_errors
def preview(scene: str, mask: str, out: str, size: int, bands: str | None, alpha: float,
            overwrite: bool) -> None:
    """Write a quick-look PNG OUT: SCENE with the class MASK overlaid and a legend."""
    from geofuse.preview import render_preview

    result = render_preview(scene, mask, out, size=size, bands=parse_bands(bands), alpha=alpha,
                            overwrite=overwrite)
    click.echo(f"{result.path}: {result.width}x{result.height} px", err=True)


if __name__ == "__main__":  # pragma: no cover
    main()
