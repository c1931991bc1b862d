"""Training chips on the fly: sampling tables, reading and augmentation.

Every epoch is a table of chips ``(unit, row, col, transform, seed)`` drawn with a generator
seeded by ``(seed, epoch)``: random positions inside training units (weighted by area), the same
with half of the chips centred on pixels of a class drawn uniformly (``balanced``), or a
shuffled grid over them. An epoch's table depends only on the seed and the epoch's number, and
is computed when the epoch's chips are first needed, so a resumed run sees exactly the chips
(and augmentations) the interrupted one would have seen.

Batches are read and augmented by Python threads and handed to tf.data by
:class:`.chipfeed.ChipFeed`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from rasterio.windows import Window

from geofuse.model.spec import Normalization
from geofuse.read.grid import axis_starts
from geofuse.training.datasets import LabelledRaster, Unit
from geofuse.training.labels import IGNORE

BALANCED_SHARE = 0.5  # share of chips centred on a class drawn uniformly ("balanced")


@dataclass(frozen=True)
class Augmentation:
    """How training chips are augmented (the fields of :class:`.config.TrainConfig` by name).

    Attributes:
        augment: Apply the 8 flips/rotations and brightness/contrast jitter (and the options
            below); False reads chips as they are.
        jitter: Brightness shift and contrast change range (normalised units).
        zoom: Random zoom range: a chip covers a window ``f`` times the patch side, ``f``
            log-uniform in ``[1 / (1 + zoom), 1 + zoom]``, resampled to the patch (image
            bilinear, labels and validity nearest); 0 keeps the pixel size.
        rotate: Random rotation range in degrees: a chip is turned by an angle uniform in
            ``[-rotate, rotate]`` about its centre before the 8 flips/rotations (45 then gives
            every angle); image bilinear, labels and validity nearest; 0: off.
        shadow: Share of chips darkened inside a soft-edged ellipse (semi-axes 1/8 to 1/2 of
            the patch, any angle) to 0.3–0.7 of their values (before normalisation); labels
            unchanged; 0: off.
        cutmix: Share of chips a rectangle of another chip of the batch is pasted into
            (CutMix: image, labels and validity; the rectangle covers about 1/4 to 1/2 of the
            chip, a side at least 1/4 of the patch); 0: off.
    """

    augment: bool = True
    jitter: float = 0.2
    zoom: float = 0.0
    rotate: float = 0.0
    shadow: float = 0.0
    cutmix: float = 0.0

    @classmethod
    def of(cls, settings: Any) -> Augmentation:
        """The augmentation fields of ``settings`` (a :class:`.config.TrainConfig`)."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class Sampling:
    """Where training chips are drawn.

    Attributes:
        mode: ``random``, ``balanced`` (as random, but half of the chips are centred on a
            pixel of a class drawn uniformly, so rare classes are seen as often as common
            ones) or ``grid``.
        seed: Base seed of the epoch tables.
        source_weights: Share of random chips per source (``raster.source``); None: by area.
    """

    mode: str = "random"
    seed: int = 0
    source_weights: tuple[float, ...] | None = None


class ChipLoader:
    """Reads normalised, augmented chips from labelled rasters.

    Args:
        rasters: The labelled rasters.
        units: Their units (training units have ``validation=False``).
        patch: Chip side in pixels.
        normalization: Scaling and per-band statistics.
        augmentation: How chips are augmented.
        sampling: Where chips are drawn.
    """

    def __init__(
        self,
        rasters: Sequence[LabelledRaster],
        units: Sequence[Unit],
        patch: int,
        normalization: Normalization,
        augmentation: Augmentation = Augmentation(),
        sampling: Sampling = Sampling(),
    ) -> None:
        self.rasters = list(rasters)
        self.units = list(units)
        self.patch = patch
        self.augmentation = augmentation
        self.augment = augmentation.augment
        self.jitter = augmentation.jitter
        self.zoom = augmentation.zoom
        self.rotate = augmentation.rotate
        self.shadow = augmentation.shadow
        self.cutmix = augmentation.cutmix
        self.seed = sampling.seed
        self.sampling = sampling.mode
        self.bands = len(self.rasters[0].bands)
        norm = normalization
        self._scale = np.float32(norm.scale)
        self._shift = np.float32(norm.offset) - np.asarray(norm.mean, np.float32)
        self._inv_std = (1.0 / np.asarray(norm.std, np.float32)).astype(np.float32)
        self._mean_z = (np.asarray(norm.mean, np.float32) * self._inv_std).astype(np.float32)
        self.train_ids = np.array(
            [i for i, u in enumerate(self.units) if not u.validation and u.counts.sum() > 0],
            dtype=np.int64,
        )
        if not len(self.train_ids):
            self.train_ids = np.array(
                [i for i, u in enumerate(self.units) if not u.validation], dtype=np.int64
            )
        self._grid = self._grid_positions(self.train_ids)
        self._p = self._unit_shares(sampling.source_weights)
        # class -> (training units holding it, their share of its pixels): balanced sampling
        self._by_class: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for c in sorted({c for i in self.train_ids for c in self.units[int(i)].points}):
            ids = np.array([i for i in self.train_ids if c in self.units[int(i)].points])
            counts = np.array([self.units[int(i)].counts[c] for i in ids], np.float64)
            self._by_class[c] = (ids, counts / counts.sum())
        self._classes = np.array(sorted(self._by_class), np.int64)

    def _unit_shares(self, source_weights: Sequence[float] | None) -> np.ndarray:
        """Each training unit's chance to hold a random chip: by area, per source if weighted."""
        areas = np.array([self.units[int(i)].area for i in self.train_ids], np.float64)
        if source_weights is not None:
            src = np.array([getattr(self.rasters[self.units[int(i)].raster], "source", 0)
                            for i in self.train_ids])
            share = np.asarray(source_weights, np.float64)[src]
            totals = {s: areas[src == s].sum() for s in set(src.tolist())}
            areas = areas / np.array([totals[s] for s in src.tolist()]) * share
        return areas / areas.sum()

    # -- sampling tables ----------------------------------------------------------------------
    def _grid_positions(self, ids: np.ndarray, partition: bool = False) -> np.ndarray:
        """Chip origins covering units.

        The last chip of a row/column is shifted inward, or with ``partition`` the grid does
        not overlap and its last chips reach past the unit (padded as ignored).
        """
        p = self.patch

        def starts(length: int) -> list[int]:
            return list(range(0, length, p)) if partition else axis_starts(length, p, p)

        rows = []
        for i in ids:
            win = self.units[int(i)].window
            for r in starts(int(win.height)):
                for c in starts(int(win.width)):
                    rows.append((i, int(win.row_off) + r, int(win.col_off) + c))
        return np.array(rows, dtype=np.int64).reshape(-1, 3)

    def epoch_rows(self, epoch: int, count: int) -> np.ndarray:
        """The chips of one epoch: ``(count, 5)`` int64 rows ``unit, row, col, k, seed``."""
        rng = np.random.default_rng((self.seed, epoch))
        if self.sampling == "grid":
            order = rng.permutation(len(self._grid))
            reps = -(-count // len(order))
            pos = self._grid[np.tile(order, reps)[:count]]
        else:
            pick = self.train_ids[rng.choice(len(self.train_ids), size=count, p=self._p)]
            pos = np.zeros((count, 3), np.int64)
            pos[:, 0] = pick
            for n, i in enumerate(pick):
                win = self.units[int(i)].window
                spare_rows = max(1, int(win.height) - self.patch + 1)
                spare_cols = max(1, int(win.width) - self.patch + 1)
                pos[n, 1] = int(win.row_off) + rng.integers(0, spare_rows)
                pos[n, 2] = int(win.col_off) + rng.integers(0, spare_cols)
            if self.sampling == "balanced" and len(self._classes):
                self._centre_on_classes(pos, rng)
        k = rng.integers(0, 8, size=count) if self.augment else np.zeros(count, np.int64)
        seeds = rng.integers(0, 2**31 - 1, size=count)
        return np.column_stack([pos, k, seeds]).astype(np.int64)

    def validation_rows(self, limit: int) -> np.ndarray:
        """Non-overlapping chips over the validation units (at most ``limit``, evenly spread).

        Every validation pixel is scored once (unless ``limit`` drops chips).
        """
        ids = np.array([i for i, u in enumerate(self.units) if u.validation], np.int64)
        pos = self._grid_positions(ids, partition=True)
        if len(pos) > limit:
            pos = pos[np.linspace(0, len(pos) - 1, limit).round().astype(int)]
        return np.column_stack([pos, np.zeros((len(pos), 2), np.int64)])

    def _centre_on_classes(self, pos: np.ndarray, rng: np.random.Generator) -> None:
        """Move every other chip onto a pixel of a class drawn uniformly (in place).

        The unit is drawn by its share of that class's training pixels, the pixel from the
        unit's sample (:data:`.datasets.POINTS`); the chip is placed around it with a random
        offset and kept inside the unit.
        """
        p = self.patch
        chosen = np.flatnonzero(rng.random(len(pos)) < BALANCED_SHARE)
        classes = rng.choice(self._classes, size=len(chosen))
        for n, c in zip(chosen.tolist(), classes.tolist(), strict=True):
            ids, weights = self._by_class[c]
            i = int(ids[rng.choice(len(ids), p=weights)])
            points = self.units[i].points[c]
            row, col = points[rng.integers(0, len(points))]
            win = self.units[i].window
            r0, c0 = int(win.row_off), int(win.col_off)
            top = row - rng.integers(p // 4, p - p // 4)
            left = col - rng.integers(p // 4, p - p // 4)
            pos[n] = (i, _inside(top, r0, int(win.height), p), _inside(left, c0, int(win.width), p))

    # -- reading ------------------------------------------------------------------------------
    def read_chip(self, unit: int, row: int, col: int,
                  size: int | None = None) -> tuple[np.ndarray, ...]:
        """A normalised ``(size, size, bands)`` chip, its labels and its validity.

        ``size`` defaults to the patch. Chips reaching past the unit are padded: image 0,
        labels IGNORE, validity False.
        """
        u = self.units[unit]
        raster = self.rasters[u.raster]
        p = size or self.patch
        h = min(p, int(u.window.row_off + u.window.height) - row)
        w = min(p, int(u.window.col_off + u.window.width) - col)
        data, valid, labels = raster.read(Window(col, row, w, h))
        x = np.moveaxis(data, 0, -1).astype(np.float32)
        x *= self._scale
        x += self._shift
        x *= self._inv_std
        x[~valid] = 0.0
        if h < p or w < p:
            x = np.pad(x, ((0, p - h), (0, p - w), (0, 0)))
            labels = np.pad(labels, ((0, p - h), (0, p - w)), constant_values=IGNORE)
            valid = np.pad(valid, ((0, p - h), (0, p - w)), constant_values=False)
        return x, labels, valid

    def warped_chip(self, unit: int, row: int, col: int, seed: int) -> tuple[np.ndarray, ...]:
        """The chip at ``(row, col)`` zoomed and turned by draws from ``seed``.

        See ``zoom`` and ``rotate``. The window read keeps the chip's centre, moved inside the
        unit where it would reach past it (what it still lacks is invalid).
        """
        p = self.patch
        rng = np.random.default_rng((seed, 1))  # its own stream: jitter draws stay the same
        q = p
        if self.zoom > 0:
            bound = np.log1p(self.zoom)
            q = max(2, round(p * float(np.exp(rng.uniform(-bound, bound)))))
        angle = float(rng.uniform(-self.rotate, self.rotate)) if self.rotate > 0 else 0.0
        if q == p and angle == 0.0:
            return self.read_chip(unit, row, col)
        turn = np.deg2rad(angle)
        side = int(np.ceil(q * (abs(np.cos(turn)) + abs(np.sin(turn))))) + 2 if angle else q
        win = self.units[unit].window
        top = _inside(row + (p - side) // 2, int(win.row_off), int(win.height), side)
        left = _inside(col + (p - side) // 2, int(win.col_off), int(win.width), side)
        x, labels, valid = self.read_chip(unit, top, left, size=side)
        return sample_chip(x, labels, valid, p, q / p, turn)

    def augment_chip(
        self, x: np.ndarray, y: np.ndarray, valid: np.ndarray, k: int, seed: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Apply dihedral transform ``k`` (0..7) and seeded brightness/contrast jitter."""
        if k % 4:
            x, y, valid = (np.rot90(a, k % 4) for a in (x, y, valid))
        if k >= 4:
            x, y, valid = x[:, ::-1], y[:, ::-1], valid[:, ::-1]
        if self.shadow > 0:
            x = self.cast_shadow(x, valid, seed)
        if self.jitter > 0:
            rng = np.random.default_rng(seed)
            contrast = rng.uniform(1 - self.jitter, 1 + self.jitter)
            brightness = rng.uniform(-self.jitter, self.jitter, size=self.bands).astype(np.float32)
            x = x * np.float32(contrast) + brightness
            x[~valid] = 0.0  # invalid input stays neutral, as at inference
        return x, y

    def cast_shadow(self, x: np.ndarray, valid: np.ndarray, seed: int) -> np.ndarray:
        """``x`` with, for a share ``shadow`` of the seeds, a darkened ellipse (see ``shadow``).

        Darkening the working-range value ``w`` to ``g * w`` gives, in normalised units,
        ``g * x + (g - 1) * mean / std``.
        """
        rng = np.random.default_rng((seed, 2))  # its own stream: jitter draws stay the same
        if rng.uniform() >= self.shadow:
            return x
        p = x.shape[0]
        centre = rng.uniform(0, p, size=2)
        axes = rng.uniform(p / 8, p / 2, size=2)
        turn = rng.uniform(0, np.pi)
        factor = rng.uniform(0.3, 0.7)
        r, c = np.meshgrid(np.arange(p) + 0.5 - centre[0], np.arange(p) + 0.5 - centre[1],
                           indexing="ij")
        u = (r * np.cos(turn) + c * np.sin(turn)) / axes[0]
        v = (c * np.cos(turn) - r * np.sin(turn)) / axes[1]
        # 1 inside, 0 outside, a soft edge about 2 px wide
        inside = np.clip((1 - np.hypot(u, v)) * axes.min() / 2, 0, 1)
        gain = (1 - inside * (1 - factor)).astype(np.float32)[..., None]
        x = x * gain + (gain - 1) * self._mean_z
        x[~valid] = 0.0
        return x

    def load(
        self, rows: np.ndarray, augment: bool | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """A batch for ``rows``: ``x (n, p, p, bands)`` float32, ``y (n, p, p)`` uint8."""
        augment = self.augment if augment is None else augment
        n, p = len(rows), self.patch
        xs = np.zeros((n, p, p, self.bands), np.float32)
        ys = np.full((n, p, p), IGNORE, np.uint8)
        for i, (unit, row, col, k, seed) in enumerate(np.asarray(rows).tolist()):
            if augment and (self.zoom > 0 or self.rotate > 0):
                x, y, valid = self.warped_chip(unit, row, col, seed)
            else:
                x, y, valid = self.read_chip(unit, row, col)
            if augment:
                x, y = self.augment_chip(x, y, valid, k, seed)
            xs[i], ys[i] = x, y
        if augment and self.cutmix > 0 and n > 1:
            self.mix(xs, ys, np.asarray(rows)[:, 4])
        return xs, ys

    def mix(self, xs: np.ndarray, ys: np.ndarray, seeds: np.ndarray) -> None:
        """Paste, in place, a rectangle of another chip into a share ``cutmix`` of the chips.

        Chip ``i``'s draws come from its seed, so a batch mixes the same way however it is
        read; the rectangles are cut from the chips as they were before any pasting.
        """
        n, p = len(xs), self.patch
        x0, y0 = xs.copy(), ys.copy()
        for i, seed in enumerate(seeds.tolist()):
            rng = np.random.default_rng((int(seed), 3))  # its own stream, as the shadow's
            if rng.uniform() >= self.cutmix:
                continue
            j = (i + 1 + int(rng.integers(0, n - 1))) % n  # any chip but this one
            area = rng.uniform(0.25, 0.5) * p * p
            h = int(np.clip(round(np.sqrt(area) * np.exp(rng.uniform(-0.5, 0.5))),
                            p // 4, p))
            w = int(np.clip(round(area / h), p // 4, p))
            top, left = int(rng.integers(0, p - h + 1)), int(rng.integers(0, p - w + 1))
            box = (slice(top, top + h), slice(left, left + w))
            xs[i][box], ys[i][box] = x0[j][box], y0[j][box]


def _inside(start: int, lo: int, length: int, size: int) -> int:
    """``start`` moved so that ``[start, start + size)`` lies in ``[lo, lo + length)``.

    Where it cannot (``size > length``) the window starts at ``lo``.
    """
    return max(lo, min(start, lo + length - size))


def sample_chip(x: np.ndarray, labels: np.ndarray, valid: np.ndarray, size: int,
                scale: float | None = None,
                turn: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A ``size``-px chip sampled about the centre of a square chip, scaled and turned.

    Output pixel centres, as offsets from the centre, are scaled by ``scale`` (source pixels per
    output pixel; default: the whole chip, ``q / size``) and turned by ``turn`` radians, pixel
    centres aligned (unturned: ``(i + 0.5) * scale - 0.5``); the image is sampled bilinearly,
    labels and validity at the nearest pixel; what falls outside the source chip is invalid, and
    invalid input is 0.
    """
    q = x.shape[0]
    scale = q / size if scale is None else scale
    offsets = (np.arange(size) + 0.5 - size / 2) * scale
    dr, dc = np.meshgrid(offsets, offsets, indexing="ij")
    cos, sin = np.cos(turn), np.sin(turn)
    src_r = q / 2 - 0.5 + cos * dr - sin * dc
    src_c = q / 2 - 0.5 + sin * dr + cos * dc
    near_r, near_c = np.floor(src_r + 0.5).astype(np.int64), np.floor(src_c + 0.5).astype(np.int64)
    inside = (near_r >= 0) & (near_r < q) & (near_c >= 0) & (near_c < q)
    near_r, near_c = np.clip(near_r, 0, q - 1), np.clip(near_c, 0, q - 1)
    ok = valid[near_r, near_c] & inside
    out_labels = np.where(ok, labels[near_r, near_c], IGNORE).astype(labels.dtype)
    src_r, src_c = np.clip(src_r, 0, q - 1), np.clip(src_c, 0, q - 1)
    r0, c0 = np.floor(src_r).astype(np.int64), np.floor(src_c).astype(np.int64)
    r1, c1 = np.minimum(r0 + 1, q - 1), np.minimum(c0 + 1, q - 1)
    wr = (src_r - r0).astype(np.float32)[..., None]
    wc = (src_c - c0).astype(np.float32)[..., None]
    top = x[r0, c0] * (1 - wc) + x[r0, c1] * wc
    bottom = x[r1, c0] * (1 - wc) + x[r1, c1] * wc
    out = top * (1 - wr) + bottom * wr
    out[~ok] = 0.0
    return out.astype(np.float32, copy=False), out_labels, ok


def memory_dataset(x: np.ndarray, y: np.ndarray, batch: int) -> Any:
    """tf.data over arrays already in memory (validation chips, benchmarks)."""
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).prefetch(2)
