"""Record the input contract and the model card of the embedded default model (no retraining).

geofuse/models/default.keras was trained (scripts/train_default.py) on RGB uint8 imagery: the
synthetic 0.5 m sample scene data_samples/scene_a.tif and the Dubai aerial tiles
(../shared/data/real/dubai-aerial-hitl, all but ``Tile 2``; not georeferenced, pixel size
unknown). This script measures what the model records about that imagery (each band's colour
interpretation, the 0.5-99.5 percentiles of each band, the pixel size: the median over the
georeferenced sources, i.e. scene_a's 0.5 m), then measures the model on real scenes it never
saw, at other pixel sizes (building IoU with ``--resample auto`` and ``off``), and writes both
into the model file's metadata with :func:`geofuse.model.replace_info`: the network is not
touched. It needs ../shared/data/real.

    nice -n 10 python scripts/default_model_card.py            # about 2 CPU minutes
    nice -n 10 python scripts/default_model_card.py --dry-run  # print, write nothing
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import rasterio
from _common import DUBAI, REAL, SAMPLES, building_scores

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HOLDOUT = "Tile 2"
INRIA = REAL / "inria-austin-deeposlandia"
ZANZIBAR = REAL / "zanzibar-drone-deeposlandia"


def training_images() -> list[SimpleNamespace]:
    """The training images as :func:`geofuse.training.facts.input_facts` takes them."""
    paths = [SAMPLES / "scene_a.tif"]
    paths += sorted(p for p in DUBAI.glob("Tile */images/*.jpg") if p.parts[-3] != HOLDOUT)
    images = []
    for path in paths:
        with warnings.catch_warnings():  # the JPEGs have no georeferencing
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            ds = rasterio.open(path)
        with ds:
            crs = ds.crs
            images.append(SimpleNamespace(image=path, bands=(1, 2, 3), crs=crs,
                                          transform=ds.transform, width=ds.width,
                                          height=ds.height))
    return images


def building_iou(model: Path, scene: Path, truth: np.ndarray, resample: str,
                 folder: Path) -> tuple[float, bool]:
    """Building IoU of the default model's ``building`` class against ``truth`` (bool)."""
    from geofuse.config import InputConfig, SegmentConfig
    from geofuse.segment import segment_scene

    out = folder / "mask.tif"
    result = segment_scene(scene, out, model, SegmentConfig(
        overwrite=True, input=InputConfig(resample=resample)), notify=lambda text: None)
    with rasterio.open(out) as ds:
        pred = ds.read(1)
    scores = building_scores(truth.astype(np.uint8), (pred == 1).astype(np.uint8),
                             pred != 255)
    return scores["iou"], result.resampled


def class_shares(model: Path, scene: Path, folder: Path, **options: object) -> str:
    """Share of each class in the mask of ``scene`` (``options``: InputConfig/tiling fields)."""
    from geofuse.config import InputConfig, SegmentConfig, TilingConfig
    from geofuse.segment import segment_scene

    bands = options.pop("bands", None)
    result = segment_scene(scene, folder / "mask.tif", model, SegmentConfig(
        tiling=TilingConfig(bands=bands), overwrite=True, input=InputConfig(**options)),
        notify=lambda text: print(f"  notice: {text}"))
    total = sum(result.class_counts.values())
    return ", ".join(f"{name} {n / total:.0%}" for name, n in result.class_counts.items() if n)


def measure(model: Path, folder: Path) -> dict[str, str]:
    """Real scenes at other pixel sizes: building IoU (auto / off) and class shares."""
    figures = {}
    with rasterio.open(INRIA / "aerial_sample_labels.tif") as ds:
        inria = ds.read(1) > 0
    with rasterio.open(ZANZIBAR / "tanzania_sample_mask_DERIVED.tif") as ds:
        zanzibar = ds.read(1) > 0
    for name, scene, truth in (
        ("Inria Austin 0.3 m", INRIA / "aerial_sample_image.tif", inria),
        ("Zanzibar drone 7.7 cm", ZANZIBAR / "tanzania_sample_image.tif", zanzibar),
    ):
        auto, _ = building_iou(model, scene, truth, "auto", folder)
        off, _ = building_iou(model, scene, truth, "off", folder)
        figures[name] = f"building IoU {auto:.2f} (read at 0.5 m; {off:.2f} as it is)"
        print(f"{name}: {figures[name]}", flush=True)
    s2 = REAL / "sen1floods11-sample" / "S2" / "Spain_7370579_S2Hand.tif"
    shares = class_shares(model, s2, folder, bands=(4, 3, 2), stretch="percentile")
    print(f"Sentinel-2 chip, --bands 4,3,2 --stretch percentile: {shares}")
    landsat = REAL / "landsat-rasterio" / "RGB.byte.tif"
    shares = class_shares(model, landsat, folder)
    print(f"Landsat RGB.byte.tif: {shares}")
    return figures


def card(info: object, figures: dict[str, str]) -> dict[str, str]:
    """The model card's own words, with the measured figures."""
    evaluation = info.provenance.get("evaluation", {})  # type: ignore[attr-defined]
    scene_b = evaluation.get("scene_b", {}).get("mean_iou")
    dubai = evaluation.get("dubai Tile 2", {}).get("mean_iou")
    return {
        "summary": "Land cover (land, building, road, water, vegetation) from RGB 8-bit "
                   "aerial imagery near 0.5 m; a small demonstration model.",
        "good_for": f"RGB uint8 aerial or satellite imagery at 0.3-1 m like its training data: "
                    f"mean IoU {scene_b:.2f} on the synthetic 0.5 m data_samples/scene_b.tif, "
                    f"{dubai:.2f} on the held-out Dubai tile (real, pixel size unknown).",
        "limits": "Real scenes it never saw, other cities and pixel sizes: "
                  + "; ".join(f"{k}: {v}" for k, v in figures.items())
                  + ". Multispectral or 16-bit scenes need --bands and --input-range or "
                    "--stretch. Pixels over 8x its 0.5 m (Sentinel-2 10 m, Landsat 30-300 m) "
                    "are not resampled and its masks of them mean little.",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path,
                        default=Path(__file__).resolve().parents[1] / "geofuse" / "models"
                        / "default.keras")
    parser.add_argument("--dry-run", action="store_true", help="Print; write nothing.")
    args = parser.parse_args()

    from geofuse.model import read_info, replace_info
    from geofuse.training.facts import input_facts

    info = read_info(args.model)
    facts = input_facts(training_images())
    print(f"training imagery: {facts}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        trial = Path(shutil.copy(args.model, folder / "default.keras"))
        replace_info(trial, dataclasses.replace(info, **facts))
        figures = measure(trial, folder)
    final = dataclasses.replace(info, **facts, card=card(info, figures))
    for key, value in final.card.items():
        print(f"{key}: {value}")
    if not args.dry_run:
        replace_info(args.model, final)
        print(f"{args.model}: metadata updated")


if __name__ == "__main__":
    main()
