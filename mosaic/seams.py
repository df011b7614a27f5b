"""The instance stage across tiles: each tile's instances become polygon pieces, and
pieces that are one colony cut by a seam (or seen twice in an overlap) are merged.

The rule (docs/orthomosaics.md states the same):
- One pixel, one colony: a tile's instances are disjoint (models/fusion.py), and each
  pixel of an overlap belongs to the tile whose core holds it (mosaic/windows.py: the
  cores partition the image). A piece keeps only its part inside its tile's core, so
  no two colonies of a mosaic share a pixel, whatever the tiles saw.
- Merge: two pieces from neighbouring tiles (side by side or diagonal) are one colony
  when, inside the rectangle the two tiles share, their intersection covers at least
  `min_shared` (default half) of the smaller of their two parts there, whatever class
  each tile gave them. Merging is transitive, so a colony larger than a tile, cut into
  pieces by several seams, comes out whole.
- The colony is the union of its pieces' core parts. Its class is the one that covers
  most of that area; its confidence is the area-weighted mean of the pieces of that
  class, unsure when under the unsure threshold. A colony left with fewer than
  `min_area` pixels is dropped, as the fusion rule drops a small instance.

Pieces are polygons in image pixel coordinates (rasterio.features.shapes, holes
kept; pixel-edge polygons, so a polygon's area is its pixel count). A colony is
final once the row after its last piece is done: only two rows of pieces are held.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import shapely
from rasterio.features import shapes
from rasterio.transform import Affine
from shapely.geometry import box, shape
from shapely.geometry.base import BaseGeometry

from mosaic.windows import Tile


@dataclass
class Piece:
    tile: tuple[int, int]  # (row, column) of the tile it came from
    label: int
    score: float
    source: str  # "sam" or "semantic" (models/fusion.py)
    geometry: BaseGeometry  # image pixel coordinates
    core: BaseGeometry | None = None  # the part inside its tile's core (set by SeamMerger.add)


@dataclass
class Colony:
    label: int
    confidence: float
    unsure: bool
    geometry: BaseGeometry  # image pixel coordinates
    sources: list[str] = field(default_factory=list)

    @property
    def area_px(self) -> int:
        return round(self.geometry.area)


def mask_polygon(mask: np.ndarray, row0: int, col0: int) -> BaseGeometry | None:
    """The outline of a boolean mask (holes kept) placed at (row0, col0) of the image."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return None
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = np.ascontiguousarray(mask[top:bottom, left:right]).astype(np.uint8)
    where = Affine.translation(col0 + left, row0 + top)
    parts = [shape(g) for g, _ in shapes(crop, mask=crop.astype(bool), transform=where)]
    return parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)


def tile_box(tile: Tile) -> BaseGeometry:
    return box(tile.cols.start, tile.rows.start, tile.cols.stop, tile.rows.stop)


def polygonal(geometry: BaseGeometry) -> BaseGeometry:
    """The areal part of an intersection (a piece touching the core's edge also yields the
    shared line or corner point, which is no pixel)."""
    if geometry.geom_type in ("Polygon", "MultiPolygon"):
        return geometry
    parts = [g for g in shapely.get_parts(geometry) if g.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def core_box(tile: Tile) -> BaseGeometry:
    rows, cols = tile.rows, tile.cols
    return box(cols.core_start, rows.core_start, cols.core_stop, rows.core_stop)


class SeamMerger:
    def __init__(self, unsure_threshold: float, min_shared: float = 0.5, min_area: int = 0) -> None:
        self.unsure_threshold = unsure_threshold
        self.min_shared = min_shared
        self.min_area = min_area
        self._pieces: dict[int, Piece] = {}
        self._parent: dict[int, int] = {}
        self._tiles: dict[tuple[int, int], tuple[Tile, list[int]]] = {}
        self._next = 0

    def _root(self, key: int) -> int:
        while self._parent[key] != key:
            self._parent[key] = self._parent[self._parent[key]]
            key = self._parent[key]
        return key

    def _join(self, a: int, b: int) -> None:
        ra, rb = self._root(a), self._root(b)
        if ra != rb:
            self._parent[max(ra, rb)] = min(ra, rb)

    def add(self, tile: Tile, pieces: list[Piece]) -> None:
        """A tile's pieces; tiles come row by row, left to right."""
        ids = []
        core = core_box(tile)
        for piece in pieces:
            piece.core = polygonal(piece.geometry.intersection(core))
            self._pieces[self._next] = piece
            self._parent[self._next] = self._next
            ids.append(self._next)
            self._next += 1
        row, col = tile.key
        for key in ((row, col - 1), (row - 1, col - 1), (row - 1, col), (row - 1, col + 1)):
            if key in self._tiles:
                self._match(tile, ids, *self._tiles[key])
        self._tiles[tile.key] = (tile, ids)

    def _match(self, tile: Tile, ids: list[int], other: Tile, other_ids: list[int]) -> None:
        shared = tile_box(tile).intersection(tile_box(other))
        if shared.area == 0 or not ids or not other_ids:
            return
        # only areal parts count: a piece that merely touches the shared rectangle's edge
        # meets it in a line, of area 0, which must not pass "0 >= half of 0"
        theirs = [polygonal(self._pieces[i].geometry.intersection(shared)) for i in other_ids]
        tree = shapely.STRtree(theirs)
        for i in ids:
            piece = self._pieces[i]
            mine = polygonal(piece.geometry.intersection(shared))
            if mine.area == 0:
                continue
            for k in tree.query(mine, predicate="intersects"):
                common = mine.intersection(theirs[k]).area
                if common > 0 and common >= self.min_shared * min(mine.area, theirs[k].area):
                    self._join(i, other_ids[k])

    def finish_row(self, row: int) -> list[Colony]:
        """Colonies that no later tile can extend: those without a piece in `row`, the row
        just done (the next row touches only this one)."""
        for key in [k for k in self._tiles if k[0] < row]:
            del self._tiles[key]
        return self._take(lambda members: all(self._pieces[i].tile[0] < row for i in members))

    def finish(self) -> list[Colony]:
        self._tiles.clear()
        return self._take(lambda members: True)

    def _take(self, done) -> list[Colony]:
        groups: dict[int, list[int]] = {}
        for i in self._pieces:
            groups.setdefault(self._root(i), []).append(i)
        colonies = []
        for root in sorted(groups):
            members = groups[root]
            if not done(members):
                continue
            colony = self._colony([self._pieces[i] for i in members])
            if colony is not None:
                colonies.append(colony)
            for i in members:
                del self._pieces[i]
            for i in members:
                del self._parent[i]
        return colonies

    def _colony(self, pieces: list[Piece]) -> Colony | None:
        """The colony of merged pieces (None when it keeps fewer than min_area pixels)."""
        parts = [p for p in pieces if not p.core.is_empty]
        if not parts:
            return None
        areas = np.array([p.core.area for p in parts])
        by_class: dict[int, float] = {}
        for part, area in zip(parts, areas, strict=True):
            by_class[part.label] = by_class.get(part.label, 0.0) + area
        label = max(sorted(by_class), key=by_class.__getitem__)  # ties: the lowest index
        geometry = parts[0].core if len(parts) == 1 else shapely.union_all([p.core for p in parts])
        if geometry.area < max(self.min_area, 1) - 1e-6:
            return None
        voted = [(p.score, a) for p, a in zip(parts, areas, strict=True) if p.label == label]
        confidence = float(sum(s * a for s, a in voted) / sum(a for _, a in voted))
        sources = sorted({p.source for p in parts})
        return Colony(label, confidence, confidence < self.unsure_threshold, geometry, sources)
