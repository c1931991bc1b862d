"""What the scripts share: data locations, the SpaceNet split, the Dubai class coding, the
held-out protocols of the training studies, the synthetic-scene generator, the git commit,
atomic JSON result files, peak memory and the training progress line.

The product tools run as ``python scripts/NAME.py``, which puts this folder on ``sys.path``;
the studies (``scripts/studies/<study>/``) and benchmarks (``scripts/bench/``) put it there
themselves. They import from here with ``from _common import ...``. geofuse itself is
imported only inside the functions that need it, so importing this module stays cheap
(``--help`` never loads TensorFlow).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

if TYPE_CHECKING:
    from geofuse.model.spec import ClassInfo
    from geofuse.training.config import LabelOptions, SceneSource, TilesSource
    from geofuse.training.evaluate import EvaluateConfig
    from geofuse.training.labels import LabelCoding

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data_samples"
# the shared real data beside the checkout; GEOFUSE_REAL_DATA points elsewhere
REAL = Path(os.environ.get("GEOFUSE_REAL_DATA") or ROOT.parent / "shared" / "data" / "real")

# -- SpaceNet: train on the western columns of one real scene, score the eastern ones ----------

SPACENET = REAL / "spacenet-solaris"
SPACENET_SCENE = SPACENET / "sample_geotiff.tif"  # 900 x 900 px, 0.5 m, panchromatic uint16
SPACENET_LABELS = SPACENET / "geotiff_labels.geojson"  # 43 building footprints
SPACENET_SPLIT = 600  # columns 0-599 train (west), 600-899 are held out (east)
SPACENET_VAL_BLOCK = 200  # validation units of the western part, in pixels


def spacenet_classes() -> tuple[ClassInfo, ...]:
    """The two SpaceNet classes: background 0, building 1."""
    from geofuse.model.spec import ClassInfo

    return (ClassInfo(0, "background", "#202020"), ClassInfo(1, "building", "#e31a1c"))


def split_columns(scene: Path, column: int, folder: Path, stem: str) -> tuple[Path, Path]:
    """Write the columns left of ``column`` and those from it on as two tiled GeoTIFFs.

    Each part, ``folder/<stem>_west.tif`` and ``<stem>_east.tif``, has its own transform.
    Parts already in ``folder`` are reused.

    Returns:
        ``(west, east)`` paths.
    """
    west, east = folder / f"{stem}_west.tif", folder / f"{stem}_east.tif"
    with rasterio.open(scene) as src:
        windows = (Window(0, 0, column, src.height),
                   Window(column, 0, src.width - column, src.height))
        for path, window in zip((west, east), windows, strict=True):
            if path.exists():
                continue
            profile = src.profile | {"width": int(window.width), "height": int(window.height),
                                     "transform": src.window_transform(window), "tiled": True,
                                     "blockxsize": 256, "blockysize": 256, "compress": "deflate"}
            tmp = path.with_suffix(".tmp.tif")
            with rasterio.open(tmp, "w", **profile) as dst:
                dst.write(src.read(window=window))
            os.replace(tmp, path)
    return west, east


def spacenet_split(folder: Path) -> tuple[Path, Path]:
    """Write the western (training) and eastern (held-out) part of the SpaceNet scene.

    Each part is a tiled GeoTIFF in ``folder`` with its own transform; the vector labels
    (:data:`SPACENET_LABELS`) cover both. Parts already in ``folder`` are reused.

    Returns:
        ``(west, east)`` paths.
    """
    return split_columns(SPACENET_SCENE, SPACENET_SPLIT, folder, "spacenet")


# -- Inria Austin: the same protocol on a second, unrelated building scene ----------------------

INRIA = REAL / "inria-austin-deeposlandia"
INRIA_SPLIT = 700  # of 1000 columns (0.3 m RGB, labels 0 / 255)


def downsampled(src: Path, dest: Path, factor: int = 2, labels: bool = False) -> Path:
    """``src`` with pixels ``factor`` times larger, written to ``dest`` (reused when there).

    Image pixels are ``factor x factor`` averages over the whole blocks of ``src``; label
    pixels (0 / 255) are 255 where at least half of the block was.
    """
    from rasterio.enums import Resampling

    if dest.exists():
        return dest
    with rasterio.open(src) as ds:
        height, width = ds.height // factor, ds.width // factor
        data = ds.read(out_shape=(ds.count, height, width), resampling=Resampling.average,
                       window=Window(0, 0, factor * width, factor * height))
        if labels:
            data = np.where(data >= 128, 255, 0).astype(ds.dtypes[0])
        profile = ds.profile | {"width": width, "height": height,
                                "transform": ds.transform * ds.transform.scale(factor),
                                "tiled": True, "blockxsize": 256, "blockysize": 256,
                                "compress": "deflate"}
    tmp = dest.with_suffix(".tmp.tif")
    with rasterio.open(tmp, "w", **profile) as out:
        out.write(data)
    os.replace(tmp, dest)
    return dest


def inria_split(folder: Path, half: bool = False) -> tuple[tuple[Path, Path], tuple[Path, Path]]:
    """The western and eastern parts of the Inria Austin crop and of its label raster.

    ``half``: of the crop at half its resolution (0.6 m; buildings about 27 px a side by
    area, as SpaceNet's 31: a set of small buildings ``--patch auto`` was not fitted on).

    Returns:
        ``((west image, west labels), (east image, east labels))``.
    """
    image, mask = INRIA / "aerial_sample_image.tif", INRIA / "aerial_sample_labels.tif"
    stem, column = "inria", INRIA_SPLIT
    if half:
        folder.mkdir(parents=True, exist_ok=True)
        image = downsampled(image, folder / "inria_half.tif")
        mask = downsampled(mask, folder / "inria_half_labels.tif", labels=True)
        stem, column = "inria_half", INRIA_SPLIT // 2
    images = split_columns(image, column, folder, stem)
    labels = split_columns(mask, column, folder, f"{stem}_labels")
    return (images[0], labels[0]), (images[1], labels[1])


# -- Massachusetts roads: small data no recipe was chosen on (at first) --------------------------

ROADS = REAL / "massachusetts-roads-subset"
ROADS_TRAIN = ("17278960_15", 700, 800, 700)  # image, row, column, side: the first image's
# 700-px window with the least no-data (0.49 Mpx, 5.7 % road); fixed before any run


def white_masked(src: Path, dest: Path, window: Window | None = None) -> Path:
    """``src`` (RGB; ``window`` of it) as a GeoTIFF whose alpha band hides pure white pixels.

    The Massachusetts roads images mark no-data as pure white (255, 255, 255; PROVENANCE.md):
    behind an alpha band those pixels are invalid input, so training ignores their labels,
    inference leaves them nodata and scoring skips them.
    """
    from rasterio.enums import ColorInterp

    with rasterio.open(src) as ds:
        rgb = ds.read(window=window)
    alpha = np.where(np.all(rgb == 255, axis=0), 0, 255).astype(np.uint8)
    with rasterio.open(dest, "w", driver="GTiff", width=rgb.shape[2], height=rgb.shape[1],
                       count=4, dtype="uint8", tiled=True, compress="deflate") as out:
        out.write(np.concatenate([rgb, alpha[None]]))
        out.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue,
                           ColorInterp.alpha]
    return dest


def roads_split(folder: Path) -> tuple[tuple[Path, Path], Path]:
    """The training window of :data:`ROADS_TRAIN` and a tiles folder of the 15 other images.

    Written as GeoTIFFs in ``folder`` (reused when there). The images carry no georeferencing;
    their pure-white no-data areas are hidden by an alpha band (:func:`white_masked`).

    Returns:
        ``((window image, window mask), tiles folder with images/ and masks/)``.
    """
    tiles = folder / "roads-held-out"
    window = folder / "roads_train.tif", folder / "roads_train_mask.tif"
    if window[1].exists() and (tiles / "done").exists():
        return window, tiles
    (tiles / "images").mkdir(parents=True, exist_ok=True)
    (tiles / "masks").mkdir(parents=True, exist_ok=True)
    name, row, col, side = ROADS_TRAIN
    for image in sorted((ROADS / "images").glob("*.png")):
        crop = Window(col, row, side, side) if image.stem == name else None
        out = window if crop else (tiles / "images" / f"{image.stem}.tif",
                                   tiles / "masks" / f"{image.stem}.tif")
        white_masked(image, out[0], crop)
        with rasterio.open(ROADS / "masks" / image.name) as src:
            mask = (src.read(1, window=crop) > 0).astype(np.uint8)
        with rasterio.open(out[1], "w", driver="GTiff", height=mask.shape[0],
                           width=mask.shape[1], count=1, dtype="uint8", tiled=True,
                           compress="deflate") as dst:
            dst.write(mask, 1)
    (tiles / "done").touch()
    return window, tiles


def building_scores(labels: np.ndarray, pred: np.ndarray,
                    valid: np.ndarray | None = None) -> dict[str, Any]:
    """Building (class 1 against background 0) IoU, F1, precision, recall and support.

    Computed by ``geofuse.training.metrics``, as ``geofuse evaluate`` does: a figure is None
    where it is undefined (e.g. precision when nothing is predicted as building).
    """
    from geofuse.training.metrics import confusion_matrix, summarize

    cm = confusion_matrix(labels, pred, 2, valid)
    return summarize(cm, ["background", "building"])["classes"]["building"]


def figure(value: float | None, width: int = 8) -> str:
    """``value`` with three decimals, right-aligned in ``width``; ``-`` when undefined."""
    return f"{'-' if value is None else format(value, '.3f'):>{width}}"


# -- Dubai aerial land cover -------------------------------------------------------------------

DUBAI = REAL / "dubai-aerial-hitl"
DUBAI_IGNORE = ("#9B9B9B", "#000000")  # "Unlabeled" and black


def dubai_coding() -> tuple[tuple[ClassInfo, ...], LabelCoding]:
    """The Dubai classes and how its colour-coded masks encode them.

    The classes and colours are data_samples/classes.json, whose colours are those measured in
    the masks (the set's own classes.json is wrong, see its PROVENANCE.md); land, building,
    road, water and vegetation map onto classes 0..4, :data:`DUBAI_IGNORE` is ignored.
    """
    from geofuse.training.labels import LabelCoding, load_classes

    classes, _ = load_classes(SAMPLES / "classes.json")
    coding = LabelCoding(classes=len(classes), colors=tuple(c.color for c in classes),
                         ignore_colors=DUBAI_IGNORE, mode="colors")
    return classes, coding


def dubai_training(holdout: str, folder: Path = DUBAI) -> TilesSource:
    """Every Dubai tile folder but ``holdout``, read through :func:`dubai_coding`."""
    from geofuse.training.config import TilesSource

    return TilesSource(folder, exclude=(f"{holdout}/images/*",), coding=dubai_coding()[1])


def dubai_holdout(model: Path, holdout: str, folder: Path = DUBAI,
                  **options: Any) -> EvaluateConfig:
    """The evaluation of ``model`` on the held-out Dubai tile folder (``options``: more fields)."""
    from geofuse.training.config import EvaluateConfig, LabelOptions, TilesSource

    # the masks' own colours: a model's class colours may be display colours (the default's)
    return EvaluateConfig(source=TilesSource(folder / holdout, coding=dubai_coding()[1]),
                          model=model,
                          labels=LabelOptions(ignore_colors=DUBAI_IGNORE, mask_mode="colors"),
                          **options)


# -- held-out protocols shared by the training studies ----------------------------------------


@dataclass(frozen=True)
class HeldOut:
    """What a study trains on and scores on for one data set (see :func:`held_out_protocol`).

    Attributes:
        sources: The training sources.
        labels: The class table of the training run.
        train_options: Further ``TrainConfig`` fields the protocol fixes (``val_block``).
        evaluation: The evaluation of the trained model on the held-out part.
        score_class: The class whose IoU is the score; None: mean IoU over the classes.
    """

    sources: tuple[TilesSource | SceneSource, ...]
    labels: LabelOptions
    evaluation: EvaluateConfig
    train_options: dict[str, Any] = field(default_factory=dict)
    score_class: str | None = None

    @property
    def score_name(self) -> str:
        """``building IoU`` or ``mean IoU``."""
        return f"{self.score_class} IoU" if self.score_class else "mean IoU"

    def score(self, report: dict[str, Any]) -> float | None:
        """The held-out score in an ``evaluate`` report."""
        if self.score_class:
            return report["classes"][self.score_class]["iou"]
        return report["mean_iou"]


def held_out_protocol(dataset: str, work: Path, model: Path) -> HeldOut:
    """The fixed protocol of ``spacenet``, ``inria`` or ``dubai-<tile>`` for a model at ``model``.

    ``spacenet``: train on the western :data:`SPACENET_SPLIT` columns (validation blocks of
    :data:`SPACENET_VAL_BLOCK` px), score building IoU on the eastern part (split files written
    to ``work``). ``dubai-<tile>``: train on every Dubai tile folder but ``<tile>``, score mean
    IoU over the five classes on it. ``inria``: as ``spacenet`` on the Inria Austin crop
    (:data:`INRIA_SPLIT`, label raster); ``inria-half``: the same at half the resolution.
    ``roads``: train on a 700-px window of one Massachusetts roads image, score road IoU on
    the 15 others (:func:`roads_split`). As ``scripts/studies/training/train_recipes.py`` runs them.
    """
    from geofuse.training.config import EvaluateConfig, LabelOptions, SceneSource

    if dataset == "spacenet":
        west, east = spacenet_split(work)
        return HeldOut(sources=(SceneSource(west, SPACENET_LABELS),),
                       labels=LabelOptions(classes=spacenet_classes()),
                       train_options={"val_block": SPACENET_VAL_BLOCK},
                       evaluation=EvaluateConfig(source=SceneSource(east, SPACENET_LABELS),
                                                 model=model),
                       score_class="building")
    if dataset in ("inria", "inria-half"):
        from geofuse.training.labels import LabelCoding

        (west, west_labels), (east, east_labels) = inria_split(work, dataset == "inria-half")
        coding = LabelCoding(classes=2, values=(0, 255))
        return HeldOut(sources=(SceneSource(west, west_labels),),
                       labels=LabelOptions(classes=spacenet_classes(), coding=coding),
                       train_options={"val_block": SPACENET_VAL_BLOCK},
                       evaluation=EvaluateConfig(source=SceneSource(east, east_labels),
                                                 model=model, labels=LabelOptions(coding=coding)),
                       score_class="building")
    if dataset == "roads":
        from geofuse.model.spec import ClassInfo
        from geofuse.training.config import TilesSource
        from geofuse.training.labels import LabelCoding

        (image, mask), tiles = roads_split(work)
        coding = LabelCoding(classes=2)
        classes = (ClassInfo(0, "background", "#202020"), ClassInfo(1, "road", "#ff7f00"))
        return HeldOut(sources=(SceneSource(image, mask),),
                       labels=LabelOptions(classes=classes, coding=coding),
                       train_options={"val_block": SPACENET_VAL_BLOCK},
                       evaluation=EvaluateConfig(source=TilesSource(tiles), model=model,
                                                 labels=LabelOptions(coding=coding)),
                       score_class="road")
    if dataset.startswith("dubai-"):
        tile = dataset[len("dubai-"):]
        return HeldOut(sources=(dubai_training(tile),),
                       labels=LabelOptions(classes=dubai_coding()[0]),
                       evaluation=dubai_holdout(model, tile, DUBAI))
    raise SystemExit(f"unknown set {dataset!r}")


def git_commit() -> str:
    """The short commit of the repository (``unknown`` outside git)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=ROOT, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def package_modified() -> bool | None:
    """Whether ``geofuse/`` has uncommitted changes (None when git cannot tell)."""
    try:
        return bool(subprocess.run(["git", "status", "--porcelain", "--", "geofuse"],
                                   capture_output=True, text=True, cwd=ROOT,
                                   check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return None


def write_json_atomic(path: Path, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    return path


# -- synthetic GeoTIFFs ------------------------------------------------------------------------

CRS = "EPSG:32633"
PIXEL_SIZE = 0.5
ORIGIN = (500000.0, 5200000.0)
LABEL_NODATA = 255
ROWS = 512  # rows generated and written at a time

# rows r0:r1 -> image (bands, r1 - r0, width) and class ids (r1 - r0, width) or None
Texture = Callable[[int, int], "tuple[np.ndarray, np.ndarray | None]"]


def geotiff_profile(width: int, height: int, count: int, nodata: int, *,
                    origin: tuple[float, float] = ORIGIN, block: int = 512,
                    **options: Any) -> dict[str, Any]:
    """Creation profile of a synthetic uint8 GeoTIFF: UTM 33N, 0.5 m pixels, tiled, deflate."""
    return {
        "driver": "GTiff", "width": width, "height": height, "count": count, "dtype": "uint8",
        "crs": CRS, "transform": from_origin(origin[0], origin[1], PIXEL_SIZE, PIXEL_SIZE),
        "nodata": nodata, "tiled": True, "blockxsize": block, "blockysize": block,
        "compress": "deflate", **options,
    }


def sample_texture(size: int) -> Texture:
    """data_samples/scene_a.tif and its labels, mirrored end to end to fill ``size`` columns.

    Neighbouring copies are mirror images, so roads, rivers and fields run on across the seams;
    the sample's nodata collar comes along.
    """
    with rasterio.open(SAMPLES / "scene_a.tif") as src:
        image = src.read()
    with rasterio.open(SAMPLES / "scene_a_labels.tif") as src:
        ids = src.read(1)
    th, tw = ids.shape

    def mirrored(index: np.ndarray, n: int) -> np.ndarray:
        copy, offset = np.divmod(index, n)
        return np.where(copy % 2, n - 1 - offset, offset)

    cols = mirrored(np.arange(size), tw)

    def render(r0: int, r1: int) -> tuple[np.ndarray, np.ndarray]:
        rows = mirrored(np.arange(r0, r1), th)[:, None]
        return image[:, rows, cols], ids[rows, cols]

    return render


def block_texture(size: int, seed: int = 0, cell: int = 16, classes: int = 5) -> Texture:
    """Random classes in ``cell`` x ``cell`` squares; each of 3 bands is 40 x class + noise.

    The noise is uniform in 1..59, so no pixel is 0 (nodata). Call the result in row order:
    one random generator serves all rows.
    """
    rng = np.random.default_rng(seed)

    def render(r0: int, r1: int) -> tuple[np.ndarray, np.ndarray]:
        h = r1 - r0
        ids = (rng.random((h // cell + 1, size // cell + 1)) * classes).astype(np.uint8)
        ids = np.kron(ids, np.ones((cell, cell), np.uint8))[:h, :size]
        image = (ids[None] * 40 + rng.integers(1, 60, (3, h, size))).astype(np.uint8)
        return image, ids

    return render


def synthetic_scene(path: Path, size: int, texture: str | Texture = "blocks", *,
                    labels: Path | None = None, seed: int = 0, cell: int = 16,
                    nodata: int = 0, block: int = 512,
                    tags: dict[str, str] | None = None, sparse: bool = False,
                    height: int | None = None) -> Path:
    """Write a ``size`` x ``size`` (or ``height``) uint8 GeoTIFF, :data:`ROWS` rows at a time.

    Never holds the whole scene in memory, so any size works. Georeferencing is
    :func:`geotiff_profile`'s; files over 4 GB become BigTIFF.

    Args:
        path: The image file.
        size: Width and height in pixels.
        texture: ``"sample"`` (:func:`sample_texture`: realistic, RGB), ``"blocks"``
            (:func:`block_texture` with ``seed`` and ``cell``: RGB), or a function of rows
            ``r0, r1`` returning the image rows and their class ids (or None), called in order.
        labels: Also write the class ids here (single band, nodata 255).
        seed: Seed of the ``"blocks"`` texture.
        cell: Square size of the ``"blocks"`` texture.
        nodata: Nodata value of the image.
        block: Tile size of the file(s).
        tags: Dataset tags of the image.
        sparse: Leave out the image blocks that are all nodata (GDAL's ``SPARSE_OK``).
        height: Rows, if not ``size`` (a strip).

    Returns:
        ``path``.
    """
    rows = size if height is None else height
    if texture == "sample":
        render = sample_texture(size)
    elif texture == "blocks":
        render = block_texture(size, seed, cell)
    elif callable(texture):
        render = texture
    else:
        raise ValueError(f"unknown texture {texture!r}")
    with ExitStack() as files:
        image_file = labels_file = None
        for r0 in range(0, rows, ROWS):
            window = Window(0, r0, size, min(ROWS, rows - r0))
            image, ids = render(r0, r0 + window.height)
            if image_file is None:
                image_file = files.enter_context(rasterio.open(
                    path, "w", **geotiff_profile(size, rows, len(image), nodata, block=block,
                                                 BIGTIFF="IF_SAFER", SPARSE_OK=sparse)))
                image_file.update_tags(**(tags or {}))
                if labels is not None:
                    labels_file = files.enter_context(rasterio.open(
                        labels, "w", **geotiff_profile(size, rows, 1, LABEL_NODATA,
                                                       block=block, BIGTIFF="IF_SAFER")))
            image_file.write(image, window=window)
            if labels_file is not None:
                if ids is None:
                    raise ValueError("labels asked for, but the texture gives no class ids")
                labels_file.write(ids[None], window=window)
    return path


# -- process and training helpers --------------------------------------------------------------


def rss_mb() -> float:
    """Resident memory of this process now, in MB (``VmRSS``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    """Peak resident memory of this process, in MB.

    ``VmHWM`` (Linux), not ``getrusage().ru_maxrss``: Linux carries ``ru_maxrss`` across
    fork + exec, so a child started by a large parent would report the parent's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def epoch_report(epochs: int, *metrics: str) -> Callable[[int, dict], None]:
    """A ``train(report=...)`` callback printing the epoch, seconds, loss and ``metrics``.

    The clock starts when this is called; a metric missing from the logs prints as nan.
    """
    start = time.perf_counter()

    def report(epoch: int, logs: dict) -> None:
        values = "  ".join(f"{name} {logs.get(name, float('nan')):.4f}"
                           for name in ("loss", *metrics))
        print(f"epoch {epoch}/{epochs} {time.perf_counter() - start:6.0f} s  {values}",
              flush=True)

    return report
