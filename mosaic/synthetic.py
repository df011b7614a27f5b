"""Georeferenced synthetic orthomosaics for the demo, the tests and the benchmarks.

    python -m mosaic.synthetic OUT.tif --images DIR --grid 2        # the demo's quadrats, 2 x 2
    python -m mosaic.synthetic OUT.tif --size 16384 --quadrat 512   # rendered reef quadrats

A grid of reef quadrats (image files, or dataset/reef_demo.py renders) written as a
tiled GeoTIFF (BigTIFF when needed) window by window, so a mosaic of any size is made
in the memory of one quadrat. Georeference: a UTM CRS (EPSG:32755 by default, UTM
zone 55S, the Great Barrier Reef) at `mm_per_pixel`, north up, the top-left corner at
`origin` (metres).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import fire
import numpy as np
import rasterio
from rasterio.transform import Affine
from rasterio.windows import Window

from dataset.image_io import read_rgb
from dataset.reef_demo import render_sample

DEFAULT_EPSG = 32755
DEFAULT_ORIGIN = (500_000.0, 8_200_000.0)


def write_mosaic(
    path: str | Path,
    cells: list[np.ndarray],
    height: int,
    width: int,
    epsg: int | None = DEFAULT_EPSG,
    mm_per_pixel: float = 1.0,
    origin: tuple[float, float] = DEFAULT_ORIGIN,
) -> Path:
    """A height x width RGB GeoTIFF tiled with `cells` (equal-size RGB quadrats, reused in turn)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cell = cells[0].shape[0]
    profile = dict(driver="GTiff", height=height, width=width, count=3, dtype="uint8",
                   tiled=True, blockxsize=256, blockysize=256, compress="deflate",
                   BIGTIFF="IF_SAFER", photometric="RGB")  # fmt: skip
    if epsg is not None:
        step = mm_per_pixel / 1000
        profile.update(crs=f"EPSG:{epsg}",
                       transform=Affine(step, 0, origin[0], 0, -step, origin[1]))  # fmt: skip
    temporary = path.with_name(f".{path.name}.tmp.tif")
    turn = itertools.cycle(cells)
    with rasterio.open(temporary, "w", **profile) as dst:
        for row0 in range(0, height, cell):
            for col0 in range(0, width, cell):
                h, w = min(cell, height - row0), min(cell, width - col0)
                block = next(turn)[:h, :w]
                dst.write(block.transpose(2, 0, 1), window=Window(col0, row0, w, h))
    temporary.replace(path)
    return path


def rendered_cells(quadrat: int, count: int = 4, seed: int = 0) -> list[np.ndarray]:
    return [render_sample(index, quadrat, seed)[0] for index in range(count)]


def main(
    out: str,
    images: str | None = None,
    grid: int = 2,
    size: int | None = None,
    quadrat: int = 512,
    epsg: int = DEFAULT_EPSG,
    mm_per_pixel: float = 1.0,
) -> None:
    """From the first grid x grid images of a folder (same size, sorted by name), or
    rendered quadrats to `size` px a side."""
    if images:
        files = sorted(p for p in Path(images).iterdir() if p.suffix.lower() in (".jpg", ".png"))
        if len(files) < grid * grid:
            raise SystemExit(f"{images}: {len(files)} images, the {grid} x {grid} grid needs "
                             f"{grid * grid}")  # fmt: skip
        cells = [read_rgb(p) for p in files[: grid * grid]]
        side = cells[0].shape[0]
        height = width = side * grid
    else:
        cells = rendered_cells(quadrat)
        height = width = size or quadrat * grid
    written = write_mosaic(out, cells, height, width, epsg, mm_per_pixel)
    print(f"{written}: {width} x {height} px, EPSG:{epsg}, {mm_per_pixel} mm per pixel")


if __name__ == "__main__":
    fire.Fire(main)
