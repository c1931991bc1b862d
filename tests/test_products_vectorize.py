"""`geofuse vectorize` and `segment --vector`: block seams, GeoPackage/GeoJSON, areas, errors."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine
from click.testing import CliRunner
from pyproj import Geod, Transformer
from shapely import affinity

from geofuse.cli import main
from geofuse.config import VectorizeConfig
from geofuse.products.vectorize import vectorize_mask
from tests.helpers import UTM_TRANSFORM, write_geotiff

NAMES = "background,building,road"


def write_mask(path: Path, mask: np.ndarray, crs: str = "EPSG:32633",
               transform: Affine = UTM_TRANSFORM, names: str | None = NAMES) -> Path:
    write_geotiff(path, mask.astype(np.uint8), crs=crs, transform=transform, nodata=255)
    if names:
        with rasterio.open(path, "r+") as ds:
            ds.update_tags(GEOFUSE_CLASSES=names)
    return path


def components(mask: np.ndarray, classes: set[int]) -> list[tuple[int, set[tuple[int, int]]]]:
    """4-connected components by breadth-first search (independent of GDAL)."""
    seen = np.zeros(mask.shape, dtype=bool)
    found = []
    for r, c in zip(*np.nonzero(np.isin(mask, list(classes))), strict=True):
        if seen[r, c]:
            continue
        value, pixels, queue = mask[r, c], set(), deque([(r, c)])
        seen[r, c] = True
        while queue:
            y, x = queue.popleft()
            pixels.add((y, x))
            for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                ny, nx = y + dy, x + dx
                if (0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and not seen[ny, nx]
                        and mask[ny, nx] == value):
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        found.append((int(value), pixels))
    return found


def pixel_union(pixels: set[tuple[int, int]], transform: Affine) -> shapely.Geometry:
    boxes = [shapely.box(c, r, c + 1, r + 1) for r, c in pixels]
    t = transform
    return affinity.affine_transform(
        shapely.union_all(boxes), [t.a, t.b, t.d, t.e, t.xoff, t.yoff]
    )


def read_layer(path: Path) -> tuple[dict, np.ndarray, dict[str, np.ndarray]]:
    meta, _, wkb, fields = pyogrio.raw.read(path)
    return meta, shapely.from_wkb(wkb), dict(zip(meta["fields"], fields, strict=True))


def vectorize(*args: str | Path) -> object:
    return CliRunner().invoke(main, ["vectorize", *map(str, args), "--quiet"])


def test_polygons_crossing_block_edges_come_out_whole(tmp_path: Path) -> None:
    mask = np.zeros((48, 40), dtype=np.uint8)
    mask[10:30, 5:9] = 1    # a tall building crossing the seam at row 16 ...
    mask[26:30, 5:20] = 1   # ... with a foot: an L
    mask[4:20, 25:28] = 1   # two arms in the first band ...
    mask[4:20, 33:36] = 1
    mask[18:22, 25:36] = 1  # ... joined only below the seam at row 16: a U
    mask[12:16, 12:16] = 1  # touches the seam at 16 from above
    mask[16:20, 16:20] = 2  # a road touching it diagonally across the seam: separate
    mask[40:48, 0:40] = 2   # a road along the last band
    path = write_mask(tmp_path / "mask.tif", mask)
    expected = components(mask, {1, 2})
    for rows in (1, 5, 16, 48):
        out = tmp_path / f"poly{rows}.gpkg"
        result = vectorize_mask(path, out, VectorizeConfig(simplify=0, block_pixels=40 * rows))
        _, geoms, fields = read_layer(out)
        assert result.polygons == len(expected) == len(geoms) == 5
        for value, pixels in expected:
            want = pixel_union(pixels, UTM_TRANSFORM)
            match = [i for i, g in enumerate(geoms) if shapely.equals(g, want)]
            assert len(match) == 1, (rows, value, len(pixels))
            assert fields["class_id"][match[0]] == value
            assert fields["pixels"][match[0]] == len(pixels)
        assert shapely.is_valid(geoms).all()
        assert all(g.geom_type == "Polygon" for g in geoms)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_masks_match_connected_components_whatever_the_block_size(
    tmp_path: Path, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    mask = rng.choice([0, 1, 2], size=(37, 29), p=[0.5, 0.3, 0.2]).astype(np.uint8)
    mask[rng.random(mask.shape) < 0.05] = 255  # nodata never becomes polygons
    path = write_mask(tmp_path / "mask.tif", mask)
    expected = sorted((v, len(p)) for v, p in components(mask, {1, 2}))
    outputs = []
    for rows in (1, 4, 37):
        out = tmp_path / f"p{rows}.gpkg"
        vectorize_mask(path, out, VectorizeConfig(simplify=0, block_pixels=29 * rows))
        _, geoms, fields = read_layer(out)
        pairs = zip(fields["class_id"].tolist(), fields["pixels"].tolist(), strict=True)
        assert sorted(pairs) == expected
        assert shapely.is_valid(geoms).all()
        outputs.append(sorted(shapely.to_wkt(shapely.normalize(geoms))))
        for value in (1, 2):
            want = pixel_union({tuple(p) for p in np.argwhere(mask == value)}, UTM_TRANSFORM)
            got = shapely.union_all(geoms[fields["class_id"] == value])
            assert shapely.equals(got, want)
    assert outputs[0] == outputs[1] == outputs[2]


def test_geopackage_opens_with_ogr_with_crs_attributes_and_areas(tmp_path: Path) -> None:
    mask = np.zeros((40, 50), dtype=np.uint8)
    mask[5:15, 5:25] = 1
    mask[20:30, 30:45] = 1
    mask[32:36, 0:40] = 2
    mask[0:3, 40:50] = 255
    path = write_mask(tmp_path / "mask.tif", mask)
    probs = np.zeros((3, 40, 50), dtype=np.uint8)
    probs[1, 5:15, 5:25] = 203   # 203/254 = 0.799
    probs[1, 20:30, 30:45] = 152  # 0.598
    probs[2, 32:36] = 254
    prob_path = write_geotiff(tmp_path / "probs.tif", probs, nodata=255)
    with rasterio.open(prob_path, "r+") as ds:
        ds.scales = (1 / 254,) * 3
    out = tmp_path / "poly.gpkg"
    result = vectorize(path, out, "--probabilities", prob_path, "--simplify", "0")
    assert result.exit_code == 0, result.output

    info = pyogrio.read_info(out)
    assert info["driver"] == "GPKG"
    assert info["crs"] == "EPSG:32633"
    assert info["geometry_type"] == "Polygon"
    assert list(info["fields"]) == ["class_id", "class_name", "pixels", "area_m2", "mean_prob"]
    _, geoms, fields = read_layer(out)
    order = np.argsort(fields["pixels"])
    assert fields["class_name"][order].tolist() == ["building", "road", "building"]
    assert fields["pixels"][order].tolist() == [150, 160, 200]
    np.testing.assert_allclose(fields["mean_prob"][order], [152 / 254, 1.0, 203 / 254],
                               atol=1e-6)
    # area on the ellipsoid, checked with an independent geodesic computation
    to_lonlat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    geod = Geod(ellps="WGS84")
    for geom, area in zip(geoms, fields["area_m2"], strict=True):
        lonlat = shapely.transform(geom, lambda xy: np.column_stack(to_lonlat.transform(*xy.T)))
        geodesic = abs(geod.geometry_area_perimeter(lonlat)[0])
        assert area == pytest.approx(geodesic, rel=1e-4)
        assert area == pytest.approx(geom.area, rel=2e-3)  # UTM is nearly equal-area here


def test_geojson_output_and_geographic_areas(tmp_path: Path) -> None:
    mask = np.zeros((30, 30), dtype=np.uint8)
    mask[3:13, 4:24] = 1
    mask[18:28, 2:6] = 1
    transform = Affine(0.0001, 0, 10.0, 0, -0.0001, 60.0)  # degrees, at 60 N
    path = write_mask(tmp_path / "mask.tif", mask, crs="EPSG:4326", transform=transform)
    out = tmp_path / "poly.json"
    result = vectorize(path, out, "--format", "geojson", "--simplify", "0")
    assert result.exit_code == 0, result.output
    info = pyogrio.read_info(out)
    assert info["driver"] == "GeoJSON"
    assert info["crs"] == "EPSG:4326"
    _, geoms, fields = read_layer(out)
    geod = Geod(ellps="WGS84")
    for geom, area, pixels in zip(geoms, fields["area_m2"], fields["pixels"], strict=True):
        assert area == pytest.approx(abs(geod.geometry_area_perimeter(geom)[0]), rel=1e-4)
        # a pixel is ~11.1 m north-south by ~5.6 m east-west at 60 N: ~62 m², not 1e-8 deg²
        assert 55 < area / pixels < 70


def test_min_area_simplify_and_classes(tmp_path: Path) -> None:
    mask = np.zeros((60, 60), dtype=np.uint8)
    mask[2:4, 2:4] = 1  # 4 px = 1 m²
    yy, xx = np.mgrid[:60, :60]
    mask[(yy - 35) ** 2 + (xx - 35) ** 2 < 18**2] = 1  # a disc: staircase outline
    mask[0:2, 20:60] = 2
    path = write_mask(tmp_path / "mask.tif", mask)

    exact, simple, big, roads = (tmp_path / f"{n}.gpkg" for n in ("exact", "simple", "big", "r"))
    assert vectorize(path, exact, "--simplify", "0").exit_code == 0
    assert vectorize(path, simple).exit_code == 0  # default: 1.5 pixels
    assert vectorize(path, big, "--min-area", "2").exit_code == 0
    assert vectorize(path, roads, "--classes", "road").exit_code == 0
    _, g_exact, f_exact = read_layer(exact)
    _, g_simple, f_simple = read_layer(simple)
    disc = np.argmax(f_exact["pixels"])
    assert shapely.get_num_coordinates(g_simple).sum() < shapely.get_num_coordinates(g_exact).sum()
    assert shapely.is_valid(g_simple).all()
    # Douglas-Peucker cuts staircase corners: ~4 % less area on this 36-pixel-wide disc
    assert g_simple[np.argmax(f_simple["pixels"])].area == pytest.approx(
        g_exact[disc].area, rel=0.06
    )
    assert sorted(read_layer(big)[2]["pixels"].tolist()) == [40 * 2, int((mask == 1).sum()) - 4]
    assert read_layer(roads)[2]["class_name"].tolist() == ["road"]
    # default classes: everything but "background"; "all" adds the background polygons
    assert set(f_exact["class_name"]) == {"building", "road"}
    every = tmp_path / "all.gpkg"
    assert vectorize(path, every, "--classes", "all", "--simplify", "0").exit_code == 0
    assert read_layer(every)[2]["pixels"].sum() == mask.size


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "no such file"),
        ("bands", "Expected a class mask with 1 band. Received: 3 bands"),
        ("float", "Expected an integer class mask"),
        ("extension", "Expected an output ending in .gpkg or .geojson"),
        ("exists", "already exists"),
        ("class", "Expected classes among 0=background, 1=building, 2=road. Received: 'roof'"),
        ("probs", "Expected probabilities of the mask's size 20x10. Received: 5x5"),
    ],
)
def test_bad_inputs_give_one_line_errors_and_no_output(
    tmp_path: Path, case: str, message: str
) -> None:
    mask = write_mask(tmp_path / "mask.tif", np.ones((10, 20), dtype=np.uint8))
    out = tmp_path / "out.gpkg"
    args: list[str | Path] = [mask, out]
    if case == "missing":
        args = [tmp_path / "nope.tif", out]
    elif case == "bands":
        args = [write_geotiff(tmp_path / "rgb.tif", np.ones((3, 10, 20), np.uint8)), out]
    elif case == "float":
        args = [write_geotiff(tmp_path / "f.tif", np.ones((10, 20), np.float32)), out]
    elif case == "extension":
        out = tmp_path / "out.shp"
        args = [mask, out]
    elif case == "exists":
        out.write_text("keep me")
    elif case == "class":
        args += ["--classes", "building,roof"]
    elif case == "probs":
        args += ["--probabilities", write_geotiff(tmp_path / "p.tif", np.ones((3, 5, 5), np.uint8))]
    result = vectorize(*args)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output
    if case == "exists":
        assert out.read_text() == "keep me"
    else:
        assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_segment_writes_polygons_of_its_mask(tmp_path: Path, tiny_models) -> None:
    rng = np.random.default_rng(0)
    scene = write_geotiff(tmp_path / "scene.tif", rng.integers(0, 255, (3, 96, 80), np.uint8))
    model = tiny_models(bands=3, classes=3)
    out, poly = tmp_path / "mask.tif", tmp_path / "poly.gpkg"
    result = CliRunner().invoke(main, [
        "segment", str(scene), str(out), "--model", str(model), "--tile", "64",
        "--vector", str(poly), "--simplify", "0", "--classes", "all",
    ])
    assert result.exit_code == 0, result.output
    assert f"{poly}: " in result.output and " polygons" in result.output
    with rasterio.open(out) as ds:
        mask, crs = ds.read(1), ds.crs
    info = pyogrio.read_info(poly)
    assert info["crs"] == crs.to_string()
    _, geoms, fields = read_layer(poly)
    for value in range(3):
        assert fields["pixels"][fields["class_id"] == value].sum() == (mask == value).sum()
    # mean probability comes from a temporary probability raster that is then removed
    assert ((fields["mean_prob"] > 0.3) & (fields["mean_prob"] <= 1.0)).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.tif", "poly.gpkg", "scene.tif"]
