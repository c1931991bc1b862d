"""Write calibration chips into the embedded model, geofuse/model/default.keras.

The chips are what ``geofuse train`` writes into every model it trains
(:func:`geofuse.model.calibration.training_chips`): 24 chips of 128² picked evenly over the
training images, here those of the default model's three training sources (scripts/
train_default.py), none of the held-out parts:

* the Dubai aerial tiles but ``Tile 2`` (CC0 1.0; attribution "Humans in the Loop / MBRSC"),
* the western 60 % of the Zanzibar drone tile at 0.3 m (CC BY 4.0; the model card already
  carries the attribution: redistributing chips of it within the model is allowed),
* the synthetic sample scene_a (geofuse's own).

16 chips from Dubai, 4 from Zanzibar, 4 from scene_a (about the training shares). Deterministic:
rerunning it writes the same bytes, so the model's digest is the same on every machine.

    python scripts/studies/int8/calibrate_default.py                 # the embedded model
    python scripts/studies/int8/calibrate_default.py --model m.keras --out /tmp/m.keras
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # scripts/, for _common and default_protocol

from _common import DUBAI, REAL, ROOT, SAMPLES  # noqa: E402
from default_protocol import HOLDOUT, ZANZIBAR_SPLIT, crop  # noqa: E402

SHARES = {"dubai": 16, "zanzibar": 4, "sample": 4}
ZANZIBAR_PIXEL = 0.3  # metres: as train_default.py reads it


def source_images(work: Path) -> dict[str, list[Path]]:
    """The training images of each source of the default model, in a fixed order."""
    dubai = sorted(p for p in DUBAI.glob("Tile */images/*.jpg") if p.parts[-3] != HOLDOUT)
    zanzibar = crop(
        REAL / "zanzibar-drone-deeposlandia" / "tanzania_sample_image.tif",
        work / "zanzibar_west.tif",
        0.0,
        ZANZIBAR_SPLIT,
        pixel=ZANZIBAR_PIXEL,
    )
    return {"dubai": dubai, "zanzibar": [zanzibar], "sample": [SAMPLES / "scene_a.tif"]}


def default_chips(info, work: Path):  # noqa: ANN001, ANN201
    """The calibration chips of the default model, ``SHARES`` from each source."""
    import numpy as np
    from rasterio.windows import Window

    from geofuse.model.calibration import SIDE, pick_chips
    from geofuse.read.reader import SceneReader

    chips = []
    for name, images in source_images(work).items():
        readers = [SceneReader(p, expected_bands=info.spec.bands) for p in images]
        try:
            areas = [(r.read_window, Window(0, 0, r.width, r.height)) for r in readers]
            picked = pick_chips(areas, info.spec.arch.multiple, SIDE, SHARES[name])
        finally:
            for r in readers:
                r.close()
        print(
            f"{name}: {len(picked)} chips of {picked.shape[1]}x{picked.shape[2]} "
            f"from {len(images)} images"
        )
        chips.append(picked)
    return np.concatenate(chips)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "geofuse/model/default.keras")
    parser.add_argument("--out", type=Path, default=None, help="Default: --model, in place.")
    args = parser.parse_args()
    from geofuse.model.calibration import add_calibration, model_calibration
    from geofuse.model.modelfile import read_info

    out = args.out or args.model
    if out != args.model:
        shutil.copyfile(args.model, out)
    with tempfile.TemporaryDirectory(prefix="geofuse-calibration-") as tmp:
        chips = default_chips(read_info(args.model), Path(tmp))
    add_calibration(out, chips)
    print(f"{out}: {len(chips)} calibration chips, sha256 {model_calibration(out).digest[:12]}")


if __name__ == "__main__":
    main()
