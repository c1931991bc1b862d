"""The STAC catalogue of a batch: ``OUT_DIR/collection.json`` over the items of its scenes.

``batch --stac`` writes the model's MLM item as ``OUT_DIR/model.json`` before any scene runs;
each worker then writes its scene's item beside the mask (``OUT_DIR/a/b.json``, linking to
the model's item). At the end the collection is rebuilt from every scene that is done or was
skipped as complete (a skipped scene whose item is missing or older than its mask gets one
now, made from its files), with its extent computed from the items: so a resumed batch
updates the collection, and a scene that failed is left out. The collection is self-contained
(relative links) and every file is written atomically.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import geofuse
from geofuse.config import SegmentConfig, StacConfig
from geofuse.errors import OutputError
from geofuse.model.stac import mlm_name, model_item
from geofuse.products.stac import item_path, write_output_item
from geofuse.scale.plan import SceneJob
from geofuse.write.outputs import write_json

if TYPE_CHECKING:
    import pystac

COLLECTION_NAME = "collection.json"
MODEL_ITEM_NAME = "model.json"
LICENSE = "other"  # the outputs inherit their scenes' terms, which geofuse cannot know


def write_model_item(out_dir: Path, model: Path) -> Path:
    """Write the model's MLM item as ``OUT_DIR/model.json`` (atomically); return its path."""
    dest = out_dir / MODEL_ITEM_NAME
    write_json(dest, model_item(model).to_dict(include_self_link=False))
    return dest


def scene_stac(job: SceneJob, out_dir: Path) -> StacConfig:
    """A scene's STAC item settings: its id and source item, and the batch's model item."""
    return dataclasses.replace(
        job.stac or StacConfig(job.mask.stem),
        model_item=(Path(out_dir) / MODEL_ITEM_NAME).absolute(),
    )


def _load_items(
    jobs: Iterable[SceneJob], config: SegmentConfig, out_dir: Path, model: Path
) -> list[pystac.Item]:
    """The scenes' items, writing those missing or older than their masks first."""
    import pystac

    items = []
    for job in jobs:
        path = item_path(job.mask)
        if not path.is_file() or path.stat().st_mtime < job.mask.stat().st_mtime:
            write_output_item(
                job.mask,
                job.scene,
                model,
                dataclasses.replace(
                    config,
                    stac=scene_stac(job, out_dir),
                    probabilities=job.probabilities,
                    vector=job.vector,
                    preview=job.preview,
                ),
            )
        items.append(pystac.Item.from_file(str(path)))
    return items


def _extent(items: list[pystac.Item]) -> pystac.Extent:
    """The items' extent; a catalogue of items without a footprint covers the globe."""
    import pystac

    placed = [item for item in items if item.bbox]
    if placed:
        spatial = pystac.SpatialExtent.from_coordinates(
            [[b for item in placed for b in (item.bbox[:2], item.bbox[2:4])]]
        )
    else:
        spatial = pystac.SpatialExtent([[-180.0, -90.0, 180.0, 90.0]])
    starts = [item.datetime or item.common_metadata.start_datetime for item in items]
    ends = [item.datetime or item.common_metadata.end_datetime for item in items]
    return pystac.Extent(
        spatial,
        pystac.TemporalExtent(
            [
                [
                    min((t for t in starts if t), default=None),
                    max((t for t in ends if t), default=None),
                ]
            ]
        ),
    )


def write_catalogue(
    out_dir: Path, jobs: list[SceneJob], config: SegmentConfig, model: Path
) -> Path:
    """Write ``OUT_DIR/collection.json`` over the items of ``jobs`` (the scenes that are done).

    Args:
        out_dir: The batch's output folder.
        jobs: The scenes whose outputs are complete.
        config: The batch's segment settings (what a missing item describes).
        model: The model file.

    Returns:
        The collection's path.

    Raises:
        OutputError: A file that cannot be written.

    """
    import pystac
    from pystac.layout import CustomLayoutStrategy

    out_dir = Path(out_dir).absolute()
    jobs = [dataclasses.replace(job, mask=job.mask.absolute()) for job in jobs]
    items = _load_items(jobs, config, out_dir, model)
    dest = out_dir / COLLECTION_NAME
    collection = pystac.Collection(
        id=out_dir.name or "geofuse",
        license=LICENSE,
        extent=_extent(items),
        title=f"geofuse segmentation: {out_dir.name}",
        description=(
            f"Class masks made by geofuse {geofuse.__version__} with the model "
            f"{model.name}, one item per scene; each item links to its scene and to "
            f"the model's MLM item ({MODEL_ITEM_NAME})."
        ),
        catalog_type=pystac.CatalogType.SELF_CONTAINED,
    )
    collection.set_self_href(str(dest))
    keep = CustomLayoutStrategy(item_func=lambda item, _parent: item.get_self_href())
    collection.add_items(items, strategy=keep)
    collection.add_link(
        pystac.Link(
            "derived_from",
            f"./{MODEL_ITEM_NAME}",
            pystac.MediaType.GEOJSON,
            f"the model ({model.name})",
            extra_fields={"mlm:name": mlm_name(model.stem)},
        )
    )
    try:
        for item in items:
            write_json(item.get_self_href(), item.to_dict(include_self_link=False))
        write_json(dest, collection.to_dict(include_self_link=False))
    except OSError as exc:
        raise OutputError(f"{dest}: cannot write the STAC collection ({exc.strerror})") from exc
    return dest
