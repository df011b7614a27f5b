"""Peak host memory and time of preparing training crops from an annotated orthomosaic.

    python bench/orthomosaic_prepare_bench.py                      # 10000, 30000, 40000 px
    python bench/orthomosaic_prepare_bench.py --sizes 2000 --crop-size 256   # smoke

Target (issue 27): a 40000 px orthomosaic with 10 000 polygons prepares in <= 4 GiB peak
RSS. Each size is a synthetic georeferenced GeoTIFF (mosaic/synthetic.py: reef quadrats,
UTM 55S, 1 mm/px) with one disc colony per CELL x CELL px cell (10 000 at 40000 px),
written both as a GeoPackage in EPSG:4326 (so the run reprojects every vertex) and, up
to TagLab's 32767 px a side, as a TagLab project, each put through the real command
(`prepare_data.py ORTHO --polygons COLONIES.gpkg --class-field genus`, `prepare_data.py
PROJECT.json`) in a fresh process;
its peak resident set comes from the kernel (batch_memory_bench.peak_rss_of). Prints a
table and one JSON line.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import fire  # noqa: E402
import numpy as np  # noqa: E402
import pyogrio.raw  # noqa: E402
import shapely  # noqa: E402
from batch_memory_bench import peak_rss_of  # noqa: E402
from pyproj import Transformer  # noqa: E402

from exchange.regions import Region  # noqa: E402
from exchange.taglab import TAGLAB_MAX_SIDE, TagLabWriter  # noqa: E402
from mosaic.synthetic import DEFAULT_EPSG, DEFAULT_ORIGIN, rendered_cells, write_mosaic  # noqa: E402

PEAK_MIB = 4096
CELL = 400  # px per colony cell: 100 x 100 cells = 10 000 colonies at 40000 px
GENERA = ["Acropora", "Porites", "Pocillopora", "Montipora", "Pavona"]


def write_colonies(path: Path, size: int, ortho: Path, seed: int = 0) -> int:
    """One disc colony per CELL x CELL px (random radius and genus), as a GeoPackage in
    EPSG:4326 and as a TagLab project beside it (PATH with .json); returns the count."""
    rng = np.random.default_rng(seed)
    centres = np.arange(CELL // 2, size - CELL // 2 + 1, CELL)
    xs, ys = np.meshgrid(centres, centres)
    xs, ys = xs.ravel(), ys.ravel()
    radii = rng.integers(40, CELL // 2 - 10, len(xs))
    discs = shapely.buffer(shapely.points(xs, ys), radii, quad_segs=16)
    step = 0.001  # mm/px of mosaic/synthetic.py's default: 1 mm
    placed = shapely.transform(discs, lambda xy: xy * [step, -step] + DEFAULT_ORIGIN)
    to_degrees = Transformer.from_crs(DEFAULT_EPSG, 4326, always_xy=True)
    lonlat = shapely.transform(placed, lambda xy: np.column_stack(to_degrees.transform(*xy.T)))
    genus = np.array([GENERA[i % len(GENERA)] for i in rng.integers(0, 1000, len(xs))], object)
    pyogrio.raw.write(
        path, shapely.to_wkb(lonlat), field_data=[genus], fields=["genus"],
        geometry_type="Polygon", crs="EPSG:4326", driver="GPKG", layer="colonies",
    )  # fmt: skip
    if size > TAGLAB_MAX_SIDE:
        return len(xs)  # TagLab cannot hold such a map: no project to prepare from
    writer = TagLabWriter(path.with_suffix(".json"), [(g, (200, 100, 50)) for g in GENERA])
    writer.begin_map(path.stem, ortho, size, size, mm_per_pixel=1.0)
    writer.write(Region(g, d, i + 1) for i, (g, d) in enumerate(zip(genus, discs, strict=True)))
    writer.end_map()
    writer.commit()
    return len(xs)


def main(sizes: str | int | tuple = "10000,30000,40000", crop_size: int = 1280,
         keep: bool = False) -> dict:  # fmt: skip
    sizes = [int(s) for s in (sizes if isinstance(sizes, (list, tuple)) else str(sizes).split(","))]
    workdir = Path(tempfile.mkdtemp(prefix="ortho-prepare-bench-"))
    rows = []
    try:
        for size in sizes:
            ortho = write_mosaic(workdir / f"ortho_{size}.tif", rendered_cells(512), size, size)
            colonies = write_colonies(workdir / f"colonies_{size}.gpkg", size, ortho)
            sources = {
                "GeoPackage": [str(ortho), "--polygons", str(workdir / f"colonies_{size}.gpkg"),
                               "--class-field", "genus"],
                "TagLab": [str(workdir / f"colonies_{size}.json"), "--name", f"ortho_{size}"],
            }  # fmt: skip
            if size > TAGLAB_MAX_SIDE:
                del sources["TagLab"]
                print(f"  {size:6d} px, TagLab    : not measured: TagLab holds no map over "
                      f"{TAGLAB_MAX_SIDE} px a side", flush=True)  # fmt: skip
            for source, first in sources.items():
                command = [sys.executable, str(ROOT / "prepare_data.py"), *first, "--crop-size",
                           str(crop_size), "--data-root", str(workdir / "prepared"),
                           "--overwrite"]  # fmt: skip
                env = dict(os.environ, CORAL_ENV_FILE=os.devnull)
                peak, wall, _ = peak_rss_of(command, env, ROOT)
                manifest = workdir / "prepared" / f"ortho_{size}" / "manifest.csv"
                crops = manifest.read_text().count("\n") - 1
                rows.append(dict(size=size, source=source, polygons=colonies, crops=crops,
                                 peak_rss_mib=peak, wall_s=round(wall, 1)))  # fmt: skip
                print(f"  {size:6d} px, {source:10s}: {colonies:6d} polygons, {crops:5d} crops, "
                      f"peak RSS {peak:6d} MiB, {wall:7.1f} s", flush=True)  # fmt: skip
                shutil.rmtree(workdir / "prepared" / f"ortho_{size}", ignore_errors=True)
            ortho.unlink()
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    peak = max(r["peak_rss_mib"] for r in rows)
    figures = dict(benchmark="orthomosaic_prepare", rows=rows, under_4_gib=peak <= PEAK_MIB)
    print(f"\nprepare_data.py on an annotated orthomosaic: peak RSS at most {peak} MiB "
          f"(target {PEAK_MIB})")  # fmt: skip
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    fire.Fire(main, serialize=lambda _: None)
