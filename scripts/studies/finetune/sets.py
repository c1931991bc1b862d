"""The real sets of the fine-tuning study, cut into a pool of labelled chips and a test area.

Each set is written once into ``WORK/<set>/`` (reused when ``manifest.json`` is there):

- ``chips/images/cNN.tif`` and ``chips/masks/cNN.tif``: the pool of labelled chips a run draws
  its 1, 2, 4 or 8 from (256 x 256 blocks; the Sentinel-2 chips are 201 x 201, as shipped),
  masks of class ids with 255 where nothing is labelled;
- ``test/`` : held-out scenes with their id masks, never drawn from;
- ``pool/<set>.tif`` with ``pool/<set>_labels.tif`` (Inria, Massachusetts): the scene the
  labelling loop picks windows from (pixels the chips come from too, never the test's).

The split, fixed before any run: Inria and SpaceNet draw chips from their top 512 rows (eight
256-px blocks, the last column overlapping its neighbour) and are scored on the rows below;
Massachusetts draws blocks from its first eight images and is scored on four others; Dubai
draws from Tile 2's parts 1-6 (the embedded model never trained on Tile 2) and is scored on
parts 7-9; Sentinel-2 forest draws from its training chips and is scored on a mosaic of 36 of
its test chips (8-px gutters of no data between them). Blocks with under 0.5 % of the target
class (or over 10 % no data) stay out of the pool.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import _common  # noqa: E402

REAL = Path(os.environ.get("GEOFUSE_REAL_DATA", _common.REAL))
"""The shared real data (``../shared/data/real`` beside the repository, or this variable)."""
DUBAI = REAL / "dubai-aerial-hitl"
INRIA = REAL / "inria-austin-deeposlandia"
ROADS = REAL / "massachusetts-roads-subset"
SPACENET = REAL / "spacenet-solaris"

BLOCK = 256
MIN_TARGET = 0.005
MAX_NODATA = 0.10
IGNORE = 255
FOREST = REAL / "sentinel2-forest-hu"
DUBAI_COLOURS = {"#8429F6": 0, "#3C1098": 1, "#6EC1E4": 2, "#E2A929": 3, "#FEDD3A": 4}


@dataclass
class Manifest:
    """What a prepared set holds (``manifest.json``)."""

    name: str
    classes: list[str]
    target: str | None  # the class scored; None: the mean IoU over the classes
    chips: list[str] = field(default_factory=list)
    tests: list[list[str]] = field(default_factory=list)
    pool: list[list[str]] = field(default_factory=list)
    notes: str = ""

    @classmethod
    def load(cls, folder: Path) -> Manifest:
        return cls(**json.loads((folder / "manifest.json").read_text()))


SETS = {
    "inria": (["background", "building"], "building"),
    "spacenet": (["background", "building"], "building"),
    "massachusetts": (["background", "road"], "road"),
    "dubai": (["land", "building", "road", "water", "vegetation"], None),
    "dubai-building": (["background", "building"], "building"),
    "forest": (["background", "vegetation"], "vegetation"),
}


def write(
    path: Path,
    data: np.ndarray,
    like: dict | None = None,
    alpha: np.ndarray | None = None,
    **profile: object,
) -> Path:
    """A tiled GeoTIFF of ``(bands, h, w)`` ``data``; ``alpha``: an alpha band of validity."""
    if data.ndim == 2:
        data = data[None]
    bands = data if alpha is None else np.concatenate([data, alpha[None].astype(data.dtype)])
    options = {
        "driver": "GTiff",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": bands.shape[0],
        "dtype": data.dtype.name,
        "compress": "deflate",
    }
    options |= {k: v for k, v in (like or {}).items() if k in ("crs", "transform")} | profile
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.tif")
    with rasterio.open(tmp, "w", **options) as dst:
        dst.write(bands)
        if alpha is not None and data.shape[0] == 3:
            dst.colorinterp = [
                ColorInterp.red,
                ColorInterp.green,
                ColorInterp.blue,
                ColorInterp.alpha,
            ]
    os.replace(tmp, path)
    return path


def _blocks(height: int, width: int, rows: int) -> list[tuple[int, int]]:
    """256-px block corners covering the first ``rows`` rows (the last column flush right)."""
    cols = list(range(0, width - BLOCK + 1, BLOCK))
    if cols[-1] + BLOCK < width:
        cols.append(width - BLOCK)
    return [(r, c) for r in range(0, rows - BLOCK + 1, BLOCK) for c in cols]


def _keep(labels: np.ndarray, target: int | None) -> bool:
    labelled = labels != IGNORE
    if labelled.mean() < 1 - MAX_NODATA:
        return False
    return target is None or (labels == target).mean() >= MIN_TARGET


def _scene_split(
    name: str, image: Path, labels: Path, folder: Path, manifest: Manifest, rows: int = 2 * BLOCK
) -> None:
    """Chips from the top ``rows`` rows, test on the rest; pool = the top rows (Inria, SpaceNet)."""
    with rasterio.open(image) as src, rasterio.open(labels) as lab:
        data, profile = src.read(), src.profile
        ids = (lab.read(1) > 0).astype(np.uint8)
        window_transform = src.window_transform
    for k, (r, c) in enumerate(_blocks(*ids.shape, rows)):
        chip = ids[r : r + BLOCK, c : c + BLOCK]
        if not _keep(chip, 1):
            continue
        like = {"crs": profile["crs"], "transform": window_transform(Window(c, r, BLOCK, BLOCK))}
        write(
            folder / "chips/images" / f"c{k:02d}.tif", data[:, r : r + BLOCK, c : c + BLOCK], like
        )
        write(folder / "chips/masks" / f"c{k:02d}.tif", chip, like)
        manifest.chips.append(f"chips/images/c{k:02d}.tif")
    height = ids.shape[0]
    for part, (r0, r1) in (("pool", (0, rows)), ("test", (rows, height))):
        like = {
            "crs": profile["crs"],
            "transform": window_transform(Window(0, r0, ids.shape[1], r1 - r0)),
        }
        img = write(
            folder / part / f"{name}.tif",
            data[:, r0:r1],
            like,
            **({"nodata": profile["nodata"]} if profile.get("nodata") is not None else {}),
        )
        lab_path = write(folder / part / f"{name}_labels.tif", ids[r0:r1], like)
        pair = [str(img.relative_to(folder)), str(lab_path.relative_to(folder))]
        (manifest.tests if part == "test" else manifest.pool).append(pair)


def _roads(folder: Path, manifest: Manifest) -> None:
    """Massachusetts: chips from images 0-7, pool = images 0-1 side by side, test = 12-15."""
    images = sorted((ROADS / "images").glob("*.png"))
    pool: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for index, path in enumerate(images):
        if 8 <= index < 12:
            continue
        with rasterio.open(path) as src:
            rgb = src.read()
        with rasterio.open(ROADS / "masks" / path.name) as src:
            ids = (src.read(1) > 0).astype(np.uint8)
        white = np.all(rgb == 255, axis=0)
        ids[white] = IGNORE
        alpha = np.where(white, 0, 255).astype(np.uint8)
        if index < 8:
            for k, (r, c) in enumerate(_blocks(*ids.shape, ids.shape[0])):
                chip = ids[r : r + BLOCK, c : c + BLOCK]
                if not _keep(chip, 1):
                    continue
                stem = f"c{index}_{k:02d}"
                write(
                    folder / "chips/images" / f"{stem}.tif",
                    rgb[:, r : r + BLOCK, c : c + BLOCK],
                    alpha=alpha[r : r + BLOCK, c : c + BLOCK],
                )
                write(folder / "chips/masks" / f"{stem}.tif", chip)
                manifest.chips.append(f"chips/images/{stem}.tif")
        if index < 2:
            pool.append((rgb, alpha, ids))
        if index >= 12:
            img = write(folder / "test" / f"{path.stem}.tif", rgb, alpha=alpha)
            lab = write(folder / "test" / f"{path.stem}_labels.tif", ids)
            manifest.tests.append([str(img.relative_to(folder)), str(lab.relative_to(folder))])
        if index == 1:  # one pool scene: windows of two scenes without a CRS would share
            # their coordinates, so areas to exclude could not tell them apart
            img = write(
                folder / "pool/massachusetts.tif",
                np.concatenate([p[0] for p in pool], 2),
                alpha=np.concatenate([p[1] for p in pool], 1),
            )
            lab = write(
                folder / "pool/massachusetts_labels.tif", np.concatenate([p[2] for p in pool], 1)
            )
            manifest.pool.append([str(img.relative_to(folder)), str(lab.relative_to(folder))])


def _dubai_ids(mask: Path) -> np.ndarray:
    from PIL import Image

    rgb = np.asarray(Image.open(mask).convert("RGB")).astype(np.int32)
    code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    ids = np.full(code.shape, IGNORE, np.uint8)
    for colour, value in DUBAI_COLOURS.items():
        ids[code == int(colour[1:], 16)] = value
    return ids


def _dubai(folder: Path, manifest: Manifest, binary: bool = False) -> None:
    """Tile 2: chips from parts 1-6 (four corner blocks each), test on parts 7-9.

    ``binary``: building (1) against every other class (0).
    """
    tile = DUBAI / "Tile 2"
    for index, image in enumerate(sorted((tile / "images").glob("*.jpg"))):
        with rasterio.open(image) as src:
            rgb = src.read()
        ids = _dubai_ids(tile / "masks" / (image.stem + ".png"))
        if binary:
            ids = np.where(ids == IGNORE, IGNORE, ids == 1).astype(np.uint8)
        if index < 6:
            h, w = ids.shape
            for k, (r, c) in enumerate(
                ((0, 0), (0, w - BLOCK), (h - BLOCK, 0), (h - BLOCK, w - BLOCK))
            ):
                chip = ids[r : r + BLOCK, c : c + BLOCK]
                if not _keep(chip, None):
                    continue
                stem = f"c{index}_{k}"
                write(folder / "chips/images" / f"{stem}.tif", rgb[:, r : r + BLOCK, c : c + BLOCK])
                write(folder / "chips/masks" / f"{stem}.tif", chip)
                manifest.chips.append(f"chips/images/{stem}.tif")
        else:
            img = write(folder / "test" / f"{image.stem}.tif", rgb)
            lab = write(folder / "test" / f"{image.stem}_labels.tif", ids)
            manifest.tests.append([str(img.relative_to(folder)), str(lab.relative_to(folder))])


def _forest_ids(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as src:
        raw = src.read(1)
        like = {"crs": src.crs, "transform": src.transform}
    ids = np.full(raw.shape, IGNORE, np.uint8)
    ids[raw == 1] = 1
    ids[raw == 2] = 0
    return ids, like


def _forest(folder: Path, manifest: Manifest, pool: int = 64, tests: int = 36) -> None:
    """Training chips (a seeded sample of ``pool``) and a 6 x 6 mosaic of test chips."""
    rng = np.random.default_rng(0)
    train = sorted((FOREST / "train_images").glob("*.jpg"))
    for image in [train[i] for i in rng.permutation(len(train))]:
        ids, like = _forest_ids(FOREST / "train_labels" / (image.stem + ".png"))
        if not _keep(ids, 1):
            continue
        with rasterio.open(image) as src:
            rgb = src.read()
        write(folder / "chips/images" / f"{image.stem}.tif", rgb, like)
        write(folder / "chips/masks" / f"{image.stem}.tif", ids, like)
        manifest.chips.append(f"chips/images/{image.stem}.tif")
        if len(manifest.chips) == pool:
            break
    test = sorted((FOREST / "test_images").glob("*.jpg"))
    test = [test[i] for i in rng.permutation(len(test))[:tests]]
    side, gutter, per_row = 201, 8, 6
    size = per_row * side + (per_row - 1) * gutter
    rgb = np.zeros((3, size, size), np.uint8)
    ids = np.full((size, size), IGNORE, np.uint8)
    alpha = np.zeros((size, size), np.uint8)
    for k, image in enumerate(test):
        r, c = (k // per_row) * (side + gutter), (k % per_row) * (side + gutter)
        with rasterio.open(image) as src:
            rgb[:, r : r + side, c : c + side] = src.read()
        ids[r : r + side, c : c + side] = _forest_ids(
            FOREST / "test_labels" / (image.stem + ".png")
        )[0]
        alpha[r : r + side, c : c + side] = 255
    like = {"crs": "EPSG:32633", "transform": from_origin(500000, 5200000, 10, 10)}
    img = write(folder / "test/forest_mosaic.tif", rgb, like, alpha=alpha)
    lab = write(folder / "test/forest_mosaic_labels.tif", ids, like)
    manifest.tests.append([str(img.relative_to(folder)), str(lab.relative_to(folder))])


def prepare(name: str, work: Path) -> tuple[Path, Manifest]:
    """The prepared folder of set ``name`` (written on first use) and its manifest."""
    folder = work / name
    if (folder / "manifest.json").exists():
        return folder, Manifest.load(folder)
    classes, target = SETS[name]
    manifest = Manifest(name=name, classes=classes, target=target)
    if name == "inria":
        _scene_split(
            "inria",
            INRIA / "aerial_sample_image.tif",
            INRIA / "aerial_sample_labels.tif",
            folder,
            manifest,
        )
    elif name == "spacenet":
        _scene_split(
            "spacenet",
            SPACENET / "sample_geotiff.tif",
            SPACENET / "sample_geotiff_buildings_mask.tif",
            folder,
            manifest,
        )
    elif name == "massachusetts":
        _roads(folder, manifest)
    elif name in ("dubai", "dubai-building"):
        _dubai(folder, manifest, binary=name == "dubai-building")
    elif name == "forest":
        _forest(folder, manifest)
    else:
        raise SystemExit(f"unknown set {name!r}: expected one of {', '.join(SETS)}")
    (folder / "manifest.json").write_text(json.dumps(asdict(manifest), indent=1))
    return folder, manifest
