"""Reading a large image by windows and writing the uint8 output maps, with rasterio.

Input: anything GDAL opens (GeoTIFF, BigTIFF, Cloud-Optimized GeoTIFF, JPEG, PNG,
TIFF). Pixels are read as stored (orthomosaics carry no EXIF orientation): bands 1-3
as RGB, one band as gray (or through its colour table), 16-bit data scaled by the
bits it uses (the NBITS tag, 16 without one). Pixels the file marks as outside the
image (nodata, or a transparent alpha band) are known to the caller as invalid.

Outputs: single-band uint8 GeoTIFFs, tiled and deflate-compressed, BigTIFF when
needed, with the input's CRS and geotransform when it has them, written under a
temporary name and renamed when complete.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.transform import Affine
from rasterio.windows import Window

from dataset.image_io import ImageReadError, ImageWriteError

# GDAL's block cache (default 5 % of RAM): bounded, so host memory does not scale
# with the machine or the image; finalised blocks are flushed as rows complete.
GDAL_CACHE_MB = 64
IGNORE_INDEX = 255  # the class map's "no data": outside the mosaic (analysis/ skips it)


def gdal_env() -> rasterio.Env:
    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB)


def quiet_open(path, *args, **kwargs):
    """rasterio.open without its warning for images that have no georeference (photos,
    PNGs): that is a normal input here, and the log says whether one is georeferenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path, *args, **kwargs)


def header_facts(path: str | Path) -> tuple[int, int, bool] | None:
    """(height, width, georeferenced) from the header, or None when GDAL cannot open it."""
    try:
        with gdal_env(), quiet_open(path) as src:
            return src.height, src.width, has_georeference(src)
    except RasterioIOError:
        return None


def has_georeference(src) -> bool:
    return src.crs is not None and src.transform != Affine.identity()


class MosaicSource:
    """An open input image, read a window at a time as (h, w, 3) uint8 RGB.

    nodata: a stored pixel value that, in every band, marks a pixel outside the mosaic
    (the black or white collar photogrammetry exports have without a nodata tag)."""

    def __init__(self, path: str | Path, nodata: int | None = None) -> None:
        self.path = Path(path)
        self.nodata = nodata
        try:
            self._src = quiet_open(self.path)
        except RasterioIOError as exc:
            raise ImageReadError(
                f"{self.path.name}: cannot be read by windows ({exc}); tiled inference reads "
                "GeoTIFF, BigTIFF, COG, JPEG, PNG and TIFF"
            ) from None
        src = self._src
        self.height, self.width = src.height, src.width
        dtype = src.dtypes[0]
        if dtype not in ("uint8", "uint16"):
            self.close()
            raise ImageReadError(
                f"{self.path.name}: {dtype} pixels; tiled inference reads 8- or 16-bit images "
                "(convert, e.g. gdal_translate -ot Byte -scale)"
            )
        top = 65535 if dtype == "uint16" else 255
        if nodata is not None and not 0 <= nodata <= top:
            self.close()
            raise ImageReadError(
                f"{self.path.name}: --nodata {nodata} is no {dtype} pixel value (0 to {top}); "
                "give the collar's value as stored (65535 for white in a 16-bit export)"
            )
        bits = int(src.tags(1, ns="IMAGE_STRUCTURE").get("NBITS", 16 if dtype == "uint16" else 8))
        self._scale = 255.0 / (2**bits - 1) if dtype == "uint16" else None
        self._colormap = None
        if src.count >= 3:
            self._bands = [1, 2, 3]
        else:
            self._bands = [1]
            with contextlib.suppress(ValueError):
                table = src.colormap(1)
                self._colormap = np.array(
                    [table.get(i, (0, 0, 0, 0))[:3] for i in range(256)], np.uint8
                )

    @property
    def georeferenced(self) -> bool:
        return has_georeference(self._src)

    @property
    def crs(self):
        return self._src.crs

    @property
    def transform(self) -> Affine:
        return self._src.transform

    def read_rgb(self, row0: int, col0: int, height: int, width: int) -> np.ndarray:
        window = Window(col0, row0, width, height)
        try:
            data = self._src.read(self._bands, window=window)
        except RasterioIOError as exc:
            raise ImageReadError(
                f"{self.path.name}: window at row {row0}, column {col0} cannot be read ({exc})"
            ) from None
        if self._scale is not None:
            data = np.clip(data * self._scale + 0.5, 0, 255).astype(np.uint8)
        if self._colormap is not None:
            return self._colormap[data[0]]
        if len(self._bands) == 1:
            data = np.repeat(data, 3, axis=0)
        return np.ascontiguousarray(data.transpose(1, 2, 0))

    def read_valid(self, row0: int, col0: int, height: int, width: int) -> np.ndarray:
        """(h, w) bool: pixels that belong to the image (not nodata, not transparent)."""
        window = Window(col0, row0, width, height)
        valid = self._src.dataset_mask(window=window) > 0
        if self.nodata is not None:
            valid &= ~(self._src.read(self._bands, window=window) == self.nodata).all(0)
        return valid

    @property
    def marks_outside(self) -> bool:
        """Whether any pixel can be outside: a nodata value, an alpha or mask band, --nodata."""
        flags = self._src.mask_flag_enums[0]
        return self.nodata is not None or flags != [MaskFlags.all_valid]

    def constant_edge(self, share: float = 0.5) -> tuple[int, ...] | None:
        """The stored colour that fills more than `share` of the image's four edges, if one
        does (a collar outside the mosaic that nothing marks); None otherwise."""
        width, height = self.width, self.height
        lines = [Window(0, 0, width, 1), Window(0, height - 1, width, 1),
                 Window(0, 0, 1, height), Window(width - 1, 0, 1, height)]  # fmt: skip
        pixels = np.concatenate(
            [self._src.read(self._bands, window=w).reshape(len(self._bands), -1) for w in lines],
            axis=1,
        )
        colours, counts = np.unique(pixels, axis=1, return_counts=True)
        best = int(counts.argmax())
        if counts[best] <= share * pixels.shape[1]:
            return None
        return tuple(int(v) for v in colours[:, best])

    def close(self) -> None:
        self._src.close()

    def __enter__(self) -> MosaicSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class MapWriter:
    """A single-band uint8 GeoTIFF written window by window, renamed into place on close."""

    def __init__(self, path: Path, source: MosaicSource, nodata: int | None = None,
                 palette: list | None = None, tags: dict | None = None) -> None:  # fmt: skip
        self.path = path
        self._temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}.tif")
        profile = dict(
            driver="GTiff", height=source.height, width=source.width, count=1, dtype="uint8",
            tiled=True, blockxsize=256, blockysize=256, compress="deflate", BIGTIFF="IF_SAFER",
            nodata=nodata,
        )  # fmt: skip
        if source.georeferenced:
            profile.update(crs=source.crs, transform=source.transform)
        try:
            self._dst = quiet_open(self._temporary, "w", **profile)
            if palette:
                self._dst.write_colormap(1, {i: tuple(c) for i, c in enumerate(palette)})
            if tags:
                self._dst.update_tags(**tags)
        except (RasterioIOError, OSError) as exc:
            self._temporary.unlink(missing_ok=True)
            raise ImageWriteError(f"{path}: cannot write ({exc})") from None

    def write(self, row0: int, col0: int, block: np.ndarray) -> None:
        height, width = block.shape
        try:
            self._dst.write(block, 1, window=Window(col0, row0, width, height))
        except (RasterioIOError, OSError) as exc:
            self.abort()
            raise ImageWriteError(f"{self.path}: cannot write ({exc})") from None

    def commit(self) -> None:
        try:
            self._dst.close()
            self._temporary.replace(self.path)
        except (RasterioIOError, OSError) as exc:
            self.abort()
            raise ImageWriteError(f"{self.path}: cannot write ({exc})") from None

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._dst.close()
        self._temporary.unlink(missing_ok=True)
