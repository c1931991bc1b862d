"""Render one synthetic aerial scene (RGB image plus class labels) with numpy only.

Class ids (a fixed contract): 0 land, 1 building, 2 road, 3 water, 4 vegetation.
"""

from __future__ import annotations

import math

import numpy as np
from synth_noise import box_blur, dilate, fbm, line_coords, shift, value_noise

LAND, BUILDING, ROAD, WATER, VEGETATION = range(5)

ROOF_COLOURS = (  # (rgb, gabled)
    ((168, 74, 58), True),  # red tile
    ((186, 104, 72), True),  # terracotta
    ((122, 123, 130), True),  # grey slate / metal
    ((214, 214, 208), False),  # white flat roof
    ((172, 170, 164), False),  # concrete
    ((58, 58, 60), False),  # dark bitumen
)


class Canvas:
    """Mutable scene state shared by the render steps.

    Attributes:
        rng: Random generator for this scene.
        shape: ``(height, width)``.
        yy: Row coordinate grid.
        xx: Column coordinate grid.
        img: Float RGB image, shape ``(h, w, 3)``.
        land: Bare-land RGB layer (used under shadows).
        labels: Class ids, uint8.
        roads: List of ``(px, py, cos, sin, width, t0, t1)`` road segments.
    """

    def __init__(self, rng: np.random.Generator, shape: tuple[int, int]) -> None:
        self.rng = rng
        self.shape = shape
        self.yy, self.xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
        self.img = np.zeros((*shape, 3))
        self.land = self.img
        self.labels = np.zeros(shape, np.uint8)
        self.roads: list[tuple[float, ...]] = []

    def paint(self, mask: np.ndarray, colour: np.ndarray, label: int) -> None:
        """Write ``colour`` (``(h, w, 3)`` or broadcastable) and ``label`` where ``mask``."""
        self.img[mask] = np.broadcast_to(colour, self.img.shape)[mask]
        self.labels[mask] = label


def _mix(t: np.ndarray, a: tuple, b: tuple) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)[..., None]
    return np.asarray(a, float) * (1.0 - t) + np.asarray(b, float) * t


def render_land(cv: Canvas) -> None:
    """Bare ground: brown/grey/sandy mix, low-frequency brightness, fine grain, dirt tracks."""
    rng, shape = cv.rng, cv.shape
    base = _mix(0.5 + 0.9 * fbm(rng, shape, 192, 3), (146, 118, 88), (136, 133, 124))
    base = 0.65 * base + 0.35 * _mix(0.3 + fbm(rng, shape, 96, 3), (120, 116, 108), (180, 160, 122))
    bright = (
        1.0
        + 0.12 * fbm(rng, shape, 48, 3)
        + 0.07 * fbm(rng, shape, 10, 2)
        + 0.12 * (value_noise(rng, shape, 2) - 0.5)
    )
    land = base * bright[..., None]
    for _ in range(2):  # faint unpaved tracks (still land)
        ang = rng.uniform(0, math.pi)
        _, across = line_coords(
            cv.xx,
            cv.yy,
            rng.uniform(0, shape[1]),
            rng.uniform(0, shape[0]),
            math.cos(ang),
            math.sin(ang),
        )
        track = np.clip(1.5 - np.abs(across + 6 * fbm(rng, shape, 128, 2)) / 2.0, 0, 1)
        land += track[..., None] * np.array([14.0, 12.0, 9.0])
    cv.land = land
    cv.img = land.copy()


def render_water(cv: Canvas, kind: str) -> None:
    """River (meandering band) or lake (noisy blob plus outflow) with an irregular shore."""
    rng, (h, w) = cv.rng, cv.shape
    shore = 7.0 * fbm(rng, cv.shape, 24, 3)
    if kind == "lake":
        cy, cx, r = rng.uniform(0.3, 0.55) * h, rng.uniform(0.55, 0.75) * w, 0.2 * min(h, w)
        dist = np.sqrt(((cv.yy - cy) / 1.2) ** 2 + (cv.xx - cx) ** 2)
        d = dist - r * (1.0 + 0.35 * fbm(rng, cv.shape, 96, 2)) + shore
        ang, half = rng.uniform(1.2, 1.5), 8.0
        along, across = line_coords(cv.xx, cv.yy, cx, cy, math.cos(ang), math.sin(ang))
        d = np.minimum(
            d,
            np.where(
                along > 0, np.abs(across + 14 * np.sin(along / 45.0)) - half + 0.4 * shore, 1e9
            ),
        )
    else:
        ang = math.pi / 2 + rng.uniform(-0.25, 0.25)
        along, across = line_coords(
            cv.xx, cv.yy, rng.uniform(0.6, 0.75) * w, h / 2, math.cos(ang), math.sin(ang)
        )
        centre = 60 * np.sin(along / 110.0 + rng.uniform(0, 6.3)) + 20 * np.sin(along / 37.0)
        half = 30 + 10 * np.sin(along / 150.0)
        d = np.abs(across - centre) - half + shore
    water = d < 0
    depth = box_blur(water.astype(float), 8)
    col = _mix(0.5 + fbm(cv.rng, cv.shape, 160, 2), (26, 50, 62), (48, 76, 62))
    col = col * (1.0 + 0.03 * fbm(cv.rng, cv.shape, 12, 2))[..., None]
    col = _mix(1.6 * (0.75 - depth), col, (84, 98, 82))  # lighter, turbid shallows
    cv.paint(water, col, WATER)


def render_roads(cv: Canvas) -> None:
    """Straight and angled asphalt/concrete roads with shoulders and dashed centre lines.

    Trunk roads cross the whole scene (bridging water); short side streets are
    re-drawn until they join another road without running alongside it or touching water.
    """
    rng, (h, w) = cv.rng, cv.shape
    full = (-1e9, 1e9)
    specs = [
        (w / 2, (0.25 + 0.45 * i + rng.uniform(-0.08, 0.08)) * h, rng.uniform(-0.12, 0.12), *full)
        for i in range(2)
    ]
    specs += [
        (
            (0.15 + 0.4 * i + rng.uniform(-0.05, 0.05)) * w,
            h / 2,
            math.pi / 2 + rng.uniform(-0.1, 0.1),
            *full,
        )
        for i in range(2)
    ]
    specs.append(
        (w * rng.uniform(0.3, 0.6), h * rng.uniform(0.3, 0.6), rng.uniform(0.45, 0.75), *full)
    )
    for _ in range(30):  # candidate side streets
        ang = rng.choice([0.0, math.pi / 2]) + rng.uniform(-0.05, 0.05)
        ext = (-rng.uniform(60, 200), rng.uniform(60, 200))
        specs.append((w * rng.uniform(0.1, 0.9), h * rng.uniform(0.1, 0.9), ang, *ext))
    grain = fbm(rng, cv.shape, 32, 3)
    side_streets = 0
    for px, py, ang, t0, t1 in specs:
        width = float(rng.integers(8, 17))
        c, s = math.cos(ang), math.sin(ang)
        along, across = line_coords(cv.xx, cv.yy, px, py, c, s)
        inside = (np.abs(across) < width / 2) & (along > t0) & (along < t1)
        if t0 > -1e8:
            if side_streets == 3 or (cv.labels[dilate(inside, 6)] == WATER).any():
                continue
            on_road = cv.labels[inside] == ROAD
            near_road = dilate(cv.labels == ROAD, 10)[inside]
            if not on_road.any() or near_road.mean() > 0.3:  # must join, not run alongside
                continue
            side_streets += 1
        grey = rng.uniform(88, 170)
        tint = np.array([grey + rng.uniform(-4, 6), grey, grey - rng.uniform(0, 8)])
        col = tint * (1.0 + 0.07 * grain + 0.04 * (rng.random(cv.shape) - 0.5))[..., None]
        shoulder = np.abs(across) > width / 2 - 1.2
        col[shoulder] *= 0.9
        if width >= 12:
            dash = (np.abs(across) < 0.8) & (np.mod(along, 18.0) < 9.0)
            col[dash] = 0.45 * col[dash] + 0.55 * 228.0
        cv.paint(inside, col, ROAD)
        cv.roads.append((px, py, c, s, width, max(t0, -2e3), min(t1, 2e3)))


def _crown(cv: Canvas, canopy: np.ndarray, cy: float, cx: float, r: float, height: float) -> None:
    y0, y1 = max(int(cy - r), 0), min(int(cy + r) + 2, cv.shape[0])
    x0, x1 = max(int(cx - r), 0), min(int(cx + r) + 2, cv.shape[1])
    d2 = ((cv.yy[y0:y1, x0:x1] - cy) ** 2 + (cv.xx[y0:y1, x0:x1] - cx) ** 2) / (r * r)
    np.maximum(canopy[y0:y1, x0:x1], height * (1.0 - d2), out=canopy[y0:y1, x0:x1])


def render_vegetation(cv: Canvas) -> None:
    """Forest patches, riparian strips, street and lone trees made of textured crowns."""
    rng, shape = cv.rng, cv.shape
    blocked = dilate((cv.labels == ROAD) | (cv.labels == WATER), 1)
    near_water = (box_blur((cv.labels == WATER).astype(float), 6, 2) > 0.04) & (
        fbm(rng, shape, 40, 2) > -0.1
    )
    region = ((fbm(rng, shape, 140, 4) > 0.3) | near_water) & ~blocked
    seeds = [np.argwhere(region & (rng.random(shape) < 1 / 28.0))]
    seeds.append(np.argwhere(~blocked & (rng.random(shape) < 1 / 6000.0)))  # lone trees
    for px, py, c, s, width, t0, t1 in cv.roads:  # street trees
        for t in np.arange(max(t0, -1500), min(t1, 1500), rng.uniform(14, 26)):
            side = width / 2 + rng.uniform(6, 10)
            if rng.random() < 0.35:
                for sgn in (-1, 1):
                    seeds.append(
                        np.array([[py + t * s + sgn * side * c, px + t * c - sgn * side * s]])
                    )
    canopy = np.zeros(shape)
    for cy, cx in np.concatenate(seeds):
        if 0 <= cy < shape[0] and 0 <= cx < shape[1]:
            _crown(cv, canopy, cy, cx, rng.uniform(3.0, 7.5), rng.uniform(0.6, 1.0))
    canopy[blocked] = 0.0
    veg = (canopy > 0.08) | region
    hue = 0.5 + 0.9 * fbm(rng, shape, 180, 2)
    base = _mix(hue, (34, 60, 30), (88, 108, 52))
    base = _mix(np.clip(fbm(rng, shape, 90, 2), 0, 1) * 1.5, base, (104, 100, 56))
    texture = 0.42 + 0.8 * canopy + 0.14 * (value_noise(rng, shape, 2) - 0.5)
    cv.paint(veg, base * texture[..., None], VEGETATION)


def _footprint(u: np.ndarray, v: np.ndarray, a: float, b: float, wing: tuple | None) -> np.ndarray:
    fp = (np.abs(u) < a / 2) & (np.abs(v) < b / 2)
    if wing is not None:
        wa, wb = wing
        fp |= (u > a / 2 - wa) & (u < a / 2) & (v >= b / 2 - 1) & (v < b / 2 + wb)
    return fp


def render_buildings(cv: Canvas, count: int, sun: tuple[float, float] = (0.6, 0.8)) -> None:
    """Rectangular and L-shaped buildings along roads, each casting a shadow (labelled land)."""
    rng, (h, w) = cv.rng, cv.shape
    occupied = dilate(np.isin(cv.labels, (ROAD, WATER)), 3)
    placed = tries = 0
    while placed < count and tries < count * 40:
        tries += 1
        a = rng.uniform(14, 60)
        b = rng.uniform(12, min(a, 40))
        wing = (
            (rng.uniform(10, a * 0.6), rng.uniform(8, 26))
            if a > 24 and rng.random() < 0.35
            else None
        )
        if rng.random() < 0.8 and cv.roads:
            px, py, c, s, width, t0, t1 = cv.roads[rng.integers(len(cv.roads))]
            t = rng.uniform(max(t0, -1200), min(t1, 1200))
            side = rng.choice([-1, 1]) * (width / 2 + rng.uniform(5, 16) + b / 2)
            cx, cy = px + t * c - side * s, py + t * s + side * c
            ang = math.atan2(s, c) + rng.uniform(-0.04, 0.04)
        else:
            cx, cy, ang = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0, math.pi)
        height = int(rng.integers(3, 10))
        reach = int(math.hypot(a, b + (wing[1] if wing else 0)) / 2 + height + 6)
        y0, y1, x0, x1 = int(cy) - reach, int(cy) + reach, int(cx) - reach, int(cx) + reach
        if y0 < 0 or x0 < 0 or y1 > h or x1 > w:
            continue
        sl = (slice(y0, y1), slice(x0, x1))
        u, v = line_coords(cv.xx[sl], cv.yy[sl], cx, cy, math.cos(ang), math.sin(ang))
        fp = _footprint(u, v, a, b, wing)
        shadow = np.zeros_like(fp)
        for k in range(1, height + 1):
            shadow |= shift(fp, round(k * sun[0]), round(k * sun[1]))
        shadow &= ~fp
        if (occupied[sl] & (fp | shadow)).any() or (cv.labels[sl][fp] == VEGETATION).mean() > 0.25:
            continue
        placed += 1
        occupied[sl] |= dilate(fp | shadow, 3)
        rgb, gabled = ROOF_COLOURS[rng.integers(len(ROOF_COLOURS))]
        roof = np.asarray(rgb, float) * rng.uniform(0.84, 1.12) + rng.uniform(-5, 5, 3)
        shade = np.where(v < 0, 1.07, 0.86) if gabled else np.ones_like(u)
        shade = shade * (1.0 + 0.03 * (rng.random(u.shape) - 0.5))
        edge = fp & ~(shift(fp, 1, 0) & shift(fp, -1, 0) & shift(fp, 0, 1) & shift(fp, 0, -1))
        shade[edge] *= 0.82 if gabled else 0.7
        col = roof * shade[..., None]
        cv.img[sl][shadow] = cv.land[sl][shadow] * np.array([0.4, 0.43, 0.52])
        cv.labels[sl][shadow] = LAND
        cv.img[sl][fp] = col[fp]
        cv.labels[sl][fp] = BUILDING


def finish(cv: Canvas) -> np.ndarray:
    """Apply illumination/haze variation, optical blur and sensor noise.

    Returns:
        Float RGB image (not yet quantised).
    """
    rng, shape = cv.rng, cv.shape
    img = cv.img * (1.0 + 0.07 * fbm(rng, shape, 256, 2))[..., None]
    img = img + np.array([3.0, 4.0, 6.0]) * (1.0 + fbm(rng, shape, 300, 1))[..., None]  # haze
    for band in range(3):
        img[..., band] = 0.55 * img[..., band] + 0.45 * box_blur(img[..., band], 1, 1)
    return img + rng.normal(0.0, 2.2, img.shape)
