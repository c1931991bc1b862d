"""Commands on scenes and products: segment, batch, info, export, vectorize, preview.

Each parses options, builds a config and calls one library function; TensorFlow is imported
only inside the commands that need it, so ``geofuse --help`` stays instant.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from geofuse.cli.app import handle_errors, main, quiet_tensorflow, warn
from geofuse.cli.options import (
    announce_runtime,
    build_segment_config,
    build_vectorize_config,
    input_options,
    preview_size_option,
    tiling_options,
    vector_options,
)
from geofuse.cli.progress import ProgressBar
from geofuse.config import (
    EXPORT_FORMATS,
    EXPORT_PRECISIONS,
    PREVIEW_SIZE,
    PREVIEW_STYLES,
    VECTOR_FORMATS,
    InputConfig,
    parse_bands,
)
from geofuse.errors import plural


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
@preview_size_option
@click.option("--stac", is_flag=True,
              help="Also describe the outputs as a STAC Item, OUT.json beside OUT (with the "
                   "model's MLM item, OUT.model.json).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Spread the scene over a local Dask cluster of N worker processes, in "
                   "bands of tile rows (same output; a rerun resumes).")
@click.option("--scheduler", default=None,
              help="Spread it over an existing Dask cluster instead, e.g. tcp://host:8786 "
                   "(OUT's folder must be shared with the workers).")
@input_options
@handle_errors
def segment(scene: str, out: str, model_path: str | None, tile: int, exact_tile: bool,
            overlap: int | None, blend: str,
            batch_size: int, bands: str | None, probability_dtype: str, tta: str, overwrite: bool,
            quiet: bool, probabilities: str | None, aoi: str | None, vector: str | None,
            simplify: float, min_area: float, classes: str | None, preview: str | None,
            preview_size: int | None, stac: bool, workers: int | None,
            scheduler: str | None,
            runtime: str, precision: str, calibration: str | None, adapt: InputConfig) -> None:
    """Segment SCENE into a class mask OUT (same CRS, transform and size; nodata 255).

    With --workers or --scheduler the scene is cut into bands of tile rows, one Dask task
    each, joined into OUT at the end; the parts wait in .OUT.parts/ beside OUT until then.
    """
    if workers is not None and scheduler is not None:
        raise click.UsageError("use either --workers (local cluster) or --scheduler, not both")
    scattered = workers is not None or scheduler is not None
    config = build_segment_config(
        tile, overlap, blend, batch_size, bands, probabilities, probability_dtype, overwrite,
        tta=tta, aoi=aoi, vector=vector, preview=preview,
        vectorize=build_vectorize_config(simplify, min_area, classes),
        runtime=runtime, precision=precision, adapt=adapt, exact_tile=exact_tile, stac=stac,
        preview_size=preview_size, calibration=calibration,
    )
    announce_runtime(config.tiling, quiet, model_path)
    # TensorFlow is loaded only to convert the model (a first run, a cold cache), by
    # segment_scene once the scene passed its checks, and by the workers when scattered
    bar = ProgressBar("bands" if scattered else "tiles", quiet)
    try:
        if scattered:
            result = _segment_scattered(scene, out, model_path, config, workers, scheduler,
                                        bar, warn)
        else:
            from geofuse.segment import segment_scene

            result = segment_scene(scene, out, model_path, config, progress=bar, notify=warn)
    finally:
        bar.close()
    if getattr(result, "lost_workers", 0):
        warn(f"{plural(result.lost_workers, 'Dask worker')} lost mid-run and "
             f"{plural(result.redone, 'band')} run again, so {result.mask} is whole")
    if not result.georeferenced:
        warn(f"{scene} is not georeferenced (no CRS, geotransform or GCPs), so neither is "
             f"{result.mask}")
    if not quiet:
        tiles = plural(result.tiles, "tile")
        left_out = (["area of interest"] if config.aoi else []) + (
            [f"{result.empty_tiles} without a valid pixel"] if result.empty_tiles else [])
        if scattered:
            tiles = (plural(result.bands, "band")
                     + (f" ({result.reused} reused)" if result.reused else "")
                     + f" on {result.cluster}, {tiles} predicted")
        elif left_out:
            tiles += f" of {result.grid_tiles} ({'; '.join(left_out)})"
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
        if result.item is not None:
            click.echo(f"{result.item}: STAC item", err=True)


def _quiet_dask() -> None:
    """Dask's logging only with --verbose: its errors reach the user as one-line messages.

    ``distributed`` sets some of its loggers' levels itself (``distributed.client``), so each
    is set, not only the parent.
    """
    if logging.getLogger().isEnabledFor(logging.INFO):
        return
    names = [n for n in logging.root.manager.loggerDict if n.startswith("distributed.")]
    for name in ["distributed", *names]:
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _segment_scattered(scene: str, out: str, model_path: str | None, config: Any,
                       workers: int | None, scheduler: str | None, bar: ProgressBar,
                       notify: Callable[[str], None]) -> Any:
    """``segment --workers/--scheduler``: the scene in bands on a Dask cluster."""
    import distributed  # noqa: F401  (sets its own logger levels on import)

    from geofuse.config import ClusterConfig
    from geofuse.scale.bands import segment_scattered

    _quiet_dask()
    return segment_scattered(scene, Path(out), model_path, config,
                             ClusterConfig(workers or 1, scheduler), progress=bar, notify=notify)


@main.command()
@click.argument("in_dir", metavar="IN_DIR|LIST|ITEMS.json", type=click.Path())
@click.argument("out_dir", type=click.Path(file_okay=False))
@tiling_options
@click.option("--probabilities", is_flag=True,
              help="Also write per-class probabilities as NAME.probs.tif beside each mask.")
@click.option("--vector", is_flag=True,
              help="Also write each mask's polygons as NAME.gpkg (see --simplify, --min-area, "
                   "--classes).")
@vector_options
@click.option("--preview", is_flag=True, help="Also write a quick-look NAME.png per scene.")
@preview_size_option
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
@click.option("--stac", is_flag=True,
              help="Also write a STAC Item per scene (NAME.json) and a static STAC collection "
                   "of the scenes done, OUT_DIR/collection.json (a rerun updates it).")
@click.option("--asset", metavar="KEY", default=None,
              help="With STAC input (ITEMS.json: an ItemCollection, item, catalogue or "
                   "collection): segment the asset KEY of each item.")
@input_options
@handle_errors
def batch(in_dir: str, out_dir: str, model_path: str | None, tile: int, exact_tile: bool,
          overlap: int | None,
          blend: str, batch_size: int, bands: str | None, probability_dtype: str, tta: str,
          overwrite: bool, quiet: bool, probabilities: bool, pattern: str, recursive: bool,
          workers: int | None, scheduler: str | None, resume: bool, runtime: str,
          precision: str, calibration: str | None, vector: bool, simplify: float,
          min_area: float, classes: str | None, preview: bool, preview_size: int | None,
          stac: bool, asset: str | None, adapt: InputConfig) -> None:
    """Segment every scene in IN_DIR (or listed in LIST) into OUT_DIR, one Dask task each.

    IN_DIR/a/b.tif becomes OUT_DIR/a/b.tif. LIST has one scene per line: a path (relative to
    the list's folder) or any name GDAL opens (https://..., /vsizip/..., s3://...). ITEMS.json
    is STAC: the asset --asset KEY of each of its items becomes OUT_DIR/ITEM_ID.tif.
    OUT_DIR/geofuse-report.json lists every scene (done, skipped or failed, with the reason).
    Exit code 1 if any scene failed.
    """
    if workers is not None and scheduler is not None:
        raise click.UsageError("use either --workers (local cluster) or --scheduler, not both")
    import distributed  # noqa: F401  (sets its own logger levels on import)

    from geofuse.config import BatchConfig
    from geofuse.scale.batch import segment_directory

    _quiet_dask()

    config = BatchConfig(
        segment=build_segment_config(tile, overlap, blend, batch_size, bands, None,
                                     probability_dtype, overwrite, tta=tta, runtime=runtime,
                                     precision=precision, adapt=adapt, exact_tile=exact_tile,
                                     calibration=calibration,
                                     vectorize=build_vectorize_config(simplify, min_area,
                                                                      classes),
                                     preview_size=preview_size),
        pattern=pattern, recursive=recursive, probabilities=probabilities, vector=vector,
        preview=preview,
        resume=resume and not overwrite, workers=workers or 1, scheduler=scheduler,
        stac=stac, asset=asset,
    )
    announce_runtime(config.segment.tiling, quiet, model_path)
    bar = ProgressBar("scenes", quiet, lines=True)
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
@click.option("--stac", "as_stac", is_flag=True,
              help="Print a model as a STAC Item of the Machine Learning Model extension.")
@handle_errors
def info(path: str, as_json: bool, as_stac: bool) -> None:
    """Describe a model file (.keras, or 'default' for the embedded one) or a raster scene.

    A scene is any file or name GDAL opens (/vsizip/..., https://..., s3://...).
    """
    if as_stac:  # from the file's metadata: no TensorFlow
        from geofuse.model.stac import model_item

        click.echo(json.dumps(model_item(path).to_dict(include_self_link=False), indent=2))
        return
    # TensorFlow is imported only for a model whose fusion learns level weights (to read them)
    from geofuse.products.info import describe, format_facts

    facts = describe(path)
    if as_json:
        click.echo(json.dumps(facts, indent=2, default=str))
        return
    for line in format_facts(facts):
        click.echo(line)


@main.command()
@click.argument("model", type=click.Path())
@click.argument("out", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS),
              default=EXPORT_FORMATS[0], show_default=True,
              help="openvino: model.xml/.bin; onnx: model.onnx (needs geofuse[onnx]); "
                   "saved_model: a TensorFlow SavedModel.")
@click.option("--precision", type=click.Choice(EXPORT_PRECISIONS), default=EXPORT_PRECISIONS[0],
              show_default=True,
              help="int8 (openvino only): the network quantized with the calibration chips the "
                   "model file carries, as segment --precision int8 runs it.")
@click.option("--calibration", type=click.Path(file_okay=False), default=None,
              help="With --precision int8: calibrate on the images in this folder instead.")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT folder.")
@handle_errors
def export(model: str, out: str, fmt: str, precision: str, calibration: str | None,
           overwrite: bool) -> None:
    """Export MODEL (.keras, or 'default') into the folder OUT for serving elsewhere.

    OUT/geofuse.json beside the network holds what it needs: bands, normalisation, classes
    and colours, patch size, input/output layout and the source model's SHA-256 (and, for
    int8, the calibration data's); OUT/stac-item.json describes it as a STAC Item (Machine
    Learning Model extension).
    """
    quiet_tensorflow()
    from geofuse.model.export import export_model
    from geofuse.model.modelfile import load_model

    loaded = load_model(model)
    folder = export_model(loaded, out, fmt, overwrite=overwrite, precision=precision,
                          calibration=calibration)
    label = f"{fmt} {precision}" if precision != "f32" else fmt
    click.echo(f"{folder}: {label} export of {loaded.path.name}", err=True)


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
    from geofuse.products.vectorize import vectorize_mask

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
@click.option("--size", type=click.IntRange(min=16), default=None,
              help="Longest side of the picture in pixels: big scenes are read from overviews, "
                   "small ones enlarged (pixels stay square). Default: the scene's size, at "
                   f"most {PREVIEW_SIZE}.")
@click.option("--bands", default=None,
              help="Bands shown as RGB (three) or grey (one), e.g. 4,3,2. "
                   "Default: the first three bands, or the first.")
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Opacity of the class colours (of the tint inside outlines).")
@click.option("--style", type=click.Choice(PREVIEW_STYLES), default=PREVIEW_STYLES[0],
              show_default=True,
              help="outline: the scene in grey, classes tinted and outlined in their colours "
                   "(readable whatever the scene's colours); fill: the scene in colour, class "
                   "colours blended over it.")
@click.option("--overwrite", is_flag=True, help="Replace an existing picture.")
@handle_errors
def preview(scene: str, mask: str, out: str, size: int | None, bands: str | None, alpha: float,
            style: str, overwrite: bool) -> None:
    """Write a quick-look PNG OUT: SCENE with the class MASK overlaid and a legend."""
    from geofuse.products.preview import render_preview

    result = render_preview(scene, mask, out, size=size, bands=parse_bands(bands), alpha=alpha,
                            overwrite=overwrite, style=style)
    click.echo(f"{result.path}: {result.width}x{result.height} px", err=True)
