"""GIS polygon files onto an orthomosaic's pixel grid (any OGR format, any CRS).

Reading (read_regions, read_area): any layer OGR reads (GeoJSON, GeoPackage, shapefile,
...) through pyogrio's raw API, read once: one WKB array and the one attribute column
asked for, no per-feature dictionaries. Polygons go from the layer's CRS to the
raster's (pyproj, always_xy, PROJ's best operation as GDAL and QGIS use it) and then
through the inverse of the raster's geotransform into the map's pixel coordinates
(exchange/regions.py: x right, y down, pixel (r, c) covers [c, c+1] x [r, r+1]).

- CRS rules. A georeferenced raster: the layer must name its CRS, or the caller says
  which one it is in (layer_crs, like ogr2ogr -a_srs; it wins over the file's). A raster
  without georeference (mosaic/raster.py's rule: no CRS or no geotransform): the layer's
  coordinates are pixel coordinates, accepted only from a layer that names no CRS (what
  mosaic/geojson.py writes for such an image). A GeoJSON file without a `crs` member is
  EPSG:4326 to GDAL (RFC 7946); over a raster without georeference it counts as naming
  none, since that is also how pixel-coordinate GeoJSON is written.
- Vertices are reprojected, long edges densified first: an edge straight in the
  layer's CRS is a curve in the raster's. Measured for EPSG:4326 or 3857 to UTM zone
  55S at 18 degrees S, a straight diagonal edge of length L strays up to 7e-9 L^2
  metres (L in metres; less along a meridian or parallel) from the chord between its
  reprojected ends: under a micrometre for a 10 m colony outline, nothing at colony
  scale (GDAL's ogr2ogr -t_srs does not densify either, and both give the same pixels),
  but 3 cm (more than half a 5 cm pixel) along a 2 km edge of an annotated-area
  rectangle. So edges are split (shapely.segmentize, in the layer's CRS) into pieces no
  longer than DENSIFY_PX raster pixels at the raster's centre: colony outlines stay as
  drawn, and no edge strays more than 1e-4 px for pixels up to 20 cm.
- Nothing is dropped silently. Features without geometry (null or empty) and features
  that are no polygons (points, lines: they paint no mask) are skipped with a
  GISWarning giving their count and FIDs; a layer with features but no polygon at all
  is a GISError. Invalid polygons (self-intersections, holes outside their shell) are
  repaired with shapely.make_valid's "structure" method (shells bound area, holes
  remove it; the "linework" method's even-odd rule would turn a self-overlapping
  outline into a hole), keeping the polygonal parts, with a warning count. Polygons
  are not clipped to the raster; those wholly outside it are reported, and a layer
  none of whose polygons reaches the raster is an error (a wrong CRS, most often).
- A null class value becomes the label "" (the taxonomy treats it as unknown); a class
  read from a numeric column is its number as text ("3", not "3.0": OGR gives an
  integer column with nulls as floats).

The GeoPackage of predicted colonies is written by mosaic/geopackage.py.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.errors
import shapely
from pyogrio import raw
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError
from rasterio.errors import RasterioIOError
from rasterio.transform import Affine
from shapely.geometry.base import BaseGeometry

from exchange.regions import Region
from mosaic.geopackage import OGR_ERRORS
from mosaic.raster import gdal_env, has_georeference, quiet_open

# Longest edge, in raster pixels at the raster's centre, left as one straight segment
# when reprojecting (module docstring: under 1e-4 px of deviation).
DENSIFY_PX = 256
_GEOJSON_PEEK = 1 << 20  # bytes read at each end of a GeoJSON file for its crs member
SHOWN_FIDS = 10  # FIDs a warning or error lists before "..."
_POLYGON, _MULTIPOLYGON, _COLLECTION = 3, 6, 7  # shapely.get_type_id


class GISError(ValueError):
    """A GIS file that cannot be put on the raster; the message names the file and the fix."""


class GISWarning(UserWarning):
    """Features skipped or repaired while reading a GIS layer (count and FIDs named)."""


@dataclass(frozen=True)
class _Grid:
    path: Path
    crs: CRS | None  # None: no georeference (pixel coordinates)
    transform: Affine
    width: int
    height: int


def read_regions(
    path: str | Path,
    raster: str | Path,
    class_field: str,
    layer: str | None = None,
    layer_crs: str | None = None,
) -> list[Region]:
    """The polygons of a GIS layer as regions in the raster's pixel coordinates.

    path: anything OGR reads; layer: its name, needed when the file holds several layers
    with geometries. class_field: the attribute holding the class (exact name, or its
    only case-insensitive match). raster: the orthomosaic the polygons were drawn on.
    layer_crs: the CRS the layer's coordinates are in (e.g. "EPSG:32755"), for a layer
    that names none or a wrong one. Region.id is the feature's FID; Polygon and
    MultiPolygon geometries, holes kept, not clipped to the raster. Rules and warnings:
    module docstring. Raises GISError.
    """
    polygons = _read_polygons(Path(path), Path(raster), layer, layer_crs, class_field)
    return [
        Region(label=label, geometry=geometry, id=int(fid))
        for fid, geometry, label in zip(
            polygons.fids, polygons.geometries, polygons.labels, strict=True
        )
    ]


def read_area(
    path: str | Path,
    raster: str | Path,
    layer: str | None = None,
    layer_crs: str | None = None,
) -> BaseGeometry:
    """The union of an "annotated area" layer's polygons, in the raster's pixel coordinates
    (a Polygon or MultiPolygon; same reading rules as read_regions)."""
    polygons = _read_polygons(Path(path), Path(raster), layer, layer_crs, None)
    if not len(polygons.geometries):
        # An empty area would mark the whole map "not annotated": a wrong file, surely.
        raise GISError(f"{path}: no polygon to make the annotated area of")
    return _polygonal(shapely.union_all(polygons.geometries))


@dataclass
class _Polygons:
    fids: np.ndarray
    geometries: np.ndarray  # of Polygon / MultiPolygon, pixel coordinates
    labels: list[str]  # empty when no class field was asked for


def _read_polygons(
    path: Path, raster: Path, layer: str | None, layer_crs: str | None, class_field: str | None
) -> _Polygons:
    grid = _raster_grid(raster)
    name = _choose_layer(path, layer)
    where = f"{path} (layer {name!r})"
    try:
        info = pyogrio.read_info(path, layer=name)
    except OGR_ERRORS as exc:
        raise GISError(f"{where}: OGR cannot read the layer ({exc})") from None
    field = None if class_field is None else _resolve_field(where, info, class_field)
    to_pixels, source_crs = _pixel_mapping(path, where, info, grid, layer_crs)
    try:
        _, fids, wkb, columns = raw.read(
            path, layer=name, columns=[] if field is None else [field],
            return_fids=True, force_2d=True,
        )  # fmt: skip
    except OGR_ERRORS as exc:
        raise GISError(f"{where}: OGR cannot read the features ({exc})") from None
    total = len(fids)
    geometries = shapely.from_wkb(wkb, on_invalid="fix")  # unparseable WKB: None
    geometries = _keep_polygons(where, fids, geometries)
    keep = ~shapely.is_missing(geometries)
    if total and not keep.any():
        raise GISError(
            f"{where}: none of its {total} features is a polygon; masks are painted from "
            "polygons (draw the colonies as polygons, or give the polygon layer)"
        )
    fids, geometries = fids[keep], geometries[keep]
    raw_labels = columns[0][keep] if field is not None else None

    geometries = to_pixels(geometries)
    coordinates, owner = shapely.get_coordinates(geometries, return_index=True)
    broken = owner[~np.isfinite(coordinates).all(axis=1)]  # outside the CRS's domain: inf
    finite = np.bincount(broken, minlength=len(geometries)) == 0
    del coordinates, owner
    geometries = _repair(where, fids, geometries, finite)
    keep = finite & ~shapely.is_empty(geometries)
    inside = keep.copy()
    inside[keep] = shapely.intersects(geometries[keep], shapely.box(0, 0, grid.width, grid.height))
    if len(geometries) and not inside.any():
        unprojectable = (
            f", {int((~finite).sum())} of them outside its domain" if broken.size else ""
        )
        raise GISError(
            f"{where}: none of its {len(geometries)} polygons lands on the raster {grid.path} "
            f"({grid.width} x {grid.height} px; layer CRS {source_crs}{unprojectable}; raster "
            f"CRS {_describe(grid.crs)}); check that the file belongs to this raster and that "
            "its CRS is right (layer_crs overrides it)"
        )
    if not finite.all():
        _warn(where, f"cannot be reprojected from {source_crs} (outside its domain)",
              fids[~finite], total)  # fmt: skip
    outside = keep & ~inside
    if outside.any():
        _warn(where, f"lie wholly outside the raster {grid.path.name}", fids[outside], total)
    labels = [] if raw_labels is None else [_label(v) for v in raw_labels[keep]]
    return _Polygons(fids[keep], geometries[keep], labels)


def _raster_grid(raster: Path) -> _Grid:
    try:
        with gdal_env(), quiet_open(raster) as src:
            georeferenced = has_georeference(src)
            crs = CRS.from_user_input(src.crs.to_wkt()) if georeferenced else None
            transform = src.transform if georeferenced else Affine.identity()
            return _Grid(raster, crs, transform, src.width, src.height)
    except RasterioIOError as exc:
        raise GISError(f"{raster}: the raster cannot be opened ({exc})") from None


def _choose_layer(path: Path, layer: str | None) -> str:
    try:
        layers = pyogrio.list_layers(path)
    except OGR_ERRORS as exc:
        raise GISError(
            f"{path}: OGR cannot open it as a vector file ({exc}); give a GeoJSON, "
            "GeoPackage or shapefile"
        ) from None
    spatial = [str(n) for n, kind in layers if kind is not None]
    if layer is not None:
        if layer in spatial:
            return layer
        raise GISError(
            f"{path}: no layer {layer!r} with geometries; its layers: "
            f"{', '.join(spatial) or 'none'}"
        )
    if len(spatial) == 1:
        return spatial[0]
    if not spatial:
        raise GISError(f"{path}: no layer with geometries (only tables without shapes)")
    raise GISError(
        f"{path}: {len(spatial)} layers with geometries ({', '.join(spatial)}); say which "
        "one holds the polygons (layer=...)"
    )


def _resolve_field(where: str, info: dict, class_field: str) -> str:
    fields = [str(f) for f in info["fields"]]
    if class_field in fields:
        return class_field
    # GeoPackage (SQLite) and shapefile (dBASE) names are case-insensitive to their
    # users; a unique match in another case is what was meant.
    folded = [f for f in fields if f.casefold() == class_field.casefold()]
    if len(folded) == 1:
        return folded[0]
    raise GISError(
        f"{where}: no attribute {class_field!r} for the class; its attributes: "
        f"{', '.join(fields) or 'none'} (give the one holding the class name)"
    )


def _pixel_mapping(path: Path, where: str, info: dict, grid: _Grid, layer_crs: str | None):
    """The function taking an array of layer geometries to pixel coordinates, and how the
    layer's CRS is described in messages."""
    named = info["crs"]
    if named is not None and info.get("driver") == "GeoJSON" and not _geojson_names_crs(path):
        named = None  # RFC 7946's default, not a statement of the file (module docstring)
        implicit = "EPSG:4326 (GeoJSON's default: the file names no CRS)"
    else:
        implicit = None
    if grid.crs is None:
        if layer_crs is not None or named is not None:
            stated = _describe(CRS.from_user_input(named)) if layer_crs is None else layer_crs
            raise GISError(
                f"{where}: its coordinates are in {stated}, but the raster "
                f"{grid.path} has no georeference, so only pixel coordinates (x right, y down, "
                "from a layer naming no CRS) can be placed on it; georeference the raster or "
                "give the polygons in pixel coordinates"
            )
        return (lambda geometries: geometries), "pixel coordinates"
    if layer_crs is not None:
        try:
            source = CRS.from_user_input(layer_crs)
        except CRSError as exc:
            raise GISError(f"{where}: layer_crs {layer_crs!r} is no CRS ({exc})") from None
        if named is not None and not source.equals(CRS.from_user_input(named)):
            warnings.warn(
                f"{where}: the file names {_describe(CRS.from_user_input(named))}; its "
                "coordinates are taken as "
                f"{_describe(source)} as asked (layer_crs)",
                GISWarning,
                stacklevel=2,
            )
    elif named is not None:
        source = CRS.from_user_input(named)
    elif implicit is not None:
        source = CRS.from_epsg(4326)
    else:
        raise GISError(
            f"{where}: the layer names no CRS, and the raster {grid.path} is in "
            f"{_describe(grid.crs)}; give layer_crs (e.g. {_code(grid.crs)!r} if its "
            "coordinates are in the raster's CRS), or assign its CRS (QGIS: Layer "
            "Properties > Source; ogr2ogr -a_srs)"
        )
    described = implicit if (named is None and layer_crs is None) else _describe(source)
    inverse = ~grid.transform
    if source.equals(grid.crs, ignore_axis_order=True):
        transformer = None  # the geotransform alone: affine, edges stay straight
        segment = None
    else:
        transformer = Transformer.from_crs(source, grid.crs, always_xy=True)
        segment = _segment_length(grid, source)

    def to_pixels(geometries: np.ndarray) -> np.ndarray:
        if segment is not None:
            geometries = shapely.segmentize(geometries, segment)

        def apply(xy: np.ndarray) -> np.ndarray:
            x, y = xy[:, 0], xy[:, 1]
            if transformer is not None:
                x, y = transformer.transform(x, y)  # out of the CRS's domain: inf
                x, y = np.asarray(x, float), np.asarray(y, float)
            col = inverse.a * x + inverse.b * y + inverse.c
            row = inverse.d * x + inverse.e * y + inverse.f
            return np.column_stack([col, row])

        return shapely.transform(geometries, apply)

    return to_pixels, described


def _segment_length(grid: _Grid, source: CRS) -> float | None:
    """DENSIFY_PX raster pixels at the raster's centre, in the layer CRS's units (the
    shorter of the two directions: a degree of longitude is not one of latitude)."""
    back = Transformer.from_crs(grid.crs, source, always_xy=True)
    col, row = grid.width / 2, grid.height / 2
    points = [(col, row), (col + DENSIFY_PX, row), (col, row + DENSIFY_PX)]
    xs, ys = zip(*(grid.transform @ p for p in points), strict=True)
    xs, ys = back.transform(xs, ys)
    lengths = [np.hypot(xs[i] - xs[0], ys[i] - ys[0]) for i in (1, 2)]
    shortest = min(lengths)
    return float(shortest) if np.isfinite(shortest) and shortest > 0 else None


def _geojson_names_crs(path: Path) -> bool:
    """Whether a GeoJSON file has a `crs` member. GDAL, QGIS and mosaic/geojson.py write
    it before the features, other writers may put it after them: the file's head and
    tail tell, without reading the features in between."""
    if not path.is_file():
        return True  # /vsizip/ and such: take GDAL's word
    with open(path, "rb") as file:
        head = file.read(_GEOJSON_PEEK)
        file.seek(max(file.tell(), path.stat().st_size - _GEOJSON_PEEK))
        tail = file.read()
    member = re.compile(rb'"crs"\s*:\s*\{')
    return bool(member.search(head) or member.search(tail))


def _keep_polygons(where: str, fids: np.ndarray, geometries: np.ndarray) -> np.ndarray:
    """Polygons and multipolygons as they are, the polygonal parts of collections, None
    for the rest (reported)."""
    geometries = geometries.copy()
    kinds = shapely.get_type_id(geometries)
    missing = shapely.is_missing(geometries) | shapely.is_empty(geometries)
    for i in np.flatnonzero((kinds == _COLLECTION) & ~missing):
        part = _polygonal(geometries[i])  # a collection's other parts paint nothing
        geometries[i] = None if part.is_empty else part
    polygonal = ~missing & np.isin(shapely.get_type_id(geometries), (_POLYGON, _MULTIPOLYGON))
    if missing.any():
        _warn(where, "have no geometry (null or empty)", fids[missing], len(fids))
    other = ~missing & ~polygonal
    if other.any():
        kinds_seen = sorted({_GEOMETRY_NAMES.get(int(k), "other") for k in kinds[other]})
        _warn(
            where,
            f"are no polygons ({', '.join(kinds_seen)}) and paint no mask",
            fids[other],
            len(fids),
        )
    geometries[~polygonal] = None
    return geometries


_GEOMETRY_NAMES = {
    0: "Point",
    1: "LineString",
    2: "LinearRing",
    4: "MultiPoint",
    5: "MultiLineString",
    7: "GeometryCollection without polygons",
}


def _repair(where: str, fids: np.ndarray, geometries: np.ndarray, usable: np.ndarray) -> np.ndarray:
    geometries = geometries.copy()
    invalid = usable & ~shapely.is_valid(geometries)
    if not invalid.any():
        return geometries
    fixed = shapely.make_valid(geometries[invalid], method="structure", keep_collapsed=False)
    geometries[invalid] = [_polygonal(g) for g in fixed]
    collapsed = invalid.copy()
    collapsed[invalid] = shapely.is_empty(geometries[invalid])
    _warn(where, "are invalid polygons (self-intersections), repaired (shapely.make_valid)",
          fids[invalid & ~collapsed], len(fids))  # fmt: skip
    if collapsed.any():
        _warn(where, "are invalid polygons with no area left once repaired, skipped",
              fids[collapsed], len(fids))  # fmt: skip
    return geometries


def _polygonal(geometry: BaseGeometry) -> BaseGeometry:
    """The polygonal part of a geometry, as a Polygon or MultiPolygon (possibly empty)."""
    if geometry.geom_type in ("Polygon", "MultiPolygon"):
        return geometry
    parts = [p for p in shapely.get_parts(geometry) if p.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def _warn(where: str, what: str, fids: np.ndarray, total: int) -> None:
    shown = ", ".join(str(int(f)) for f in fids[:SHOWN_FIDS])
    more = ", ..." if len(fids) > SHOWN_FIDS else ""
    warnings.warn(
        f"{where}: {len(fids)} of {total} features {what} (FID {shown}{more})",
        GISWarning,
        stacklevel=2,
    )


def _label(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float | np.floating):
        if np.isnan(value):
            return ""
        return str(int(value)) if float(value).is_integer() else str(float(value))
    if isinstance(value, np.datetime64) and np.isnat(value):
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _describe(crs: CRS | None) -> str:
    if crs is None:
        return "no CRS"
    code = _code(crs)
    return f"{crs.name} ({code})" if code else crs.name


def _code(crs: CRS) -> str | None:
    authority = crs.to_authority()
    return f"{authority[0]}:{authority[1]}" if authority else None
