"""Peak host memory and seconds per megapixel of tiled two-stage inference as mosaics grow.

    python bench/scale_bench.py                                   # 2k, 8k, 16k px a side, CPU
    python bench/scale_bench.py --sizes 40000 --device cuda --full-models --points-per-side 8 \
        --tile-size 2048                                          # bench/gpu_session.sh
    python bench/scale_bench.py --sizes 192 --tile-size 128 --overlap 32 --quadrat 128  # smoke
    python bench/scale_bench.py --reef-stats                      # 10k, 20k, 40k px, CPU
    python bench/scale_bench.py --reef-stats --truth              # beside corrected polygons

Target (issue 15): peak host RSS flat within 20 % and seconds per megapixel within
25 % across sizes; a 40000 px mosaic within 8 GiB of host memory and the GPU memory
of one tile. Each size is a synthetic georeferenced GeoTIFF (mosaic/synthetic.py:
reef quadrats, UTM, 1 mm/px) put through the real command, `inference_with_coralscop.py
--tiled`, in a fresh process; its peak resident set comes from the kernel
(batch_memory_bench.peak_rss_of) and its seconds from the image's record (model
loading excluded). By default the models are the tiny semantic config and a tiny
random SAM with light settings (CPU); --full-models runs the recipe's DINOv2-B +
SegFormer and a SAM ViT-B (random weights: the work per tile is the real one). Prints a
table and one JSON line.

--reef-stats measures what reads those outputs: `reef_stats.py summarize` on a mosaics/
folder (class-map GeoTIFF + colonies GeoJSON, written here directly, no inference) at a
fixed colony density (one disc colony per 500 x 500 px cell: 400 at 10000 px, 6400 at
40000 px), in a fresh process each. Target (issue 23): peak RSS <= 2 GiB at every size
and within 20 % of the smallest. With --truth the same map is summarized beside its
colonies as corrected polygons (`--truth colonies.geojson --images ortho.tif`, the ortho
a copy of the class map's grid): the pair is counted window by window as well.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import fire  # noqa: E402
from batch_memory_bench import peak_rss_of  # noqa: E402

from models.random_checkpoint import write_random_semantic_checkpoint  # noqa: E402
from mosaic.synthetic import rendered_cells, write_mosaic  # noqa: E402

TINY_CONFIG = ROOT / "configs/reef_demo_tiny.py"
MAIN_CONFIG = ROOT / "configs/dinov2_vitb14_coralsegv4_ms_config_segformer.py"
MEMORY_FLAT_WITHIN, SPEED_FLAT_WITHIN = 0.20, 0.25
STATS_PEAK_MIB = 2048
CELL = 500  # px per colony cell of the reef_stats bench's class map
# The command as users run it (argv[1]: 1 for the tiny SAM); peak GPU memory on stderr.
LAUNCHER = """
import json, sys
import torch
from models import coralscop
if sys.argv[1] == "1":
    coralscop.SAM_VIT_B = coralscop.SAM_TINY
import inference_with_coralscop as cli
status = cli.main(sys.argv[2:])
if torch.cuda.is_available():
    peak = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps({"peak_gpu_mib": round(peak)}), file=sys.stderr)
sys.exit(status)
"""


@contextlib.contextmanager
def _workdir(prefix: str, keep: bool) -> Iterator[Path]:
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield workdir
    finally:
        if keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _sizes(sizes) -> list[int]:
    # fire gives "2048,8192" as a tuple and "2048" as an int
    return [int(s) for s in str(sizes).strip("()[] ").split(",") if s.strip()]


def main(
    sizes: str | int | tuple = "2048,8192,16384",
    tile_size: int = 1024,
    overlap: int = 128,
    points_per_side: int = 1,  # light SAM: per tile, CoralSCoP work is per prompt
    device: str = "cpu",
    full_models: bool = False,
    quadrat: int = 512,
    keep: bool = False,
    reef_stats: bool = False,
    truth: bool = False,
) -> dict:
    if reef_stats:
        stats_sizes = sizes if sizes != "2048,8192,16384" else "10000,20000,40000"
        return reef_stats_bench(stats_sizes, keep, truth)
    sizes = _sizes(sizes)
    config = MAIN_CONFIG if full_models else TINY_CONFIG
    rows = []
    with _workdir("scale-bench-", keep) as workdir:
        weights = write_random_semantic_checkpoint(config, workdir / "random.pth")
        cells = rendered_cells(quadrat)
        for size in sizes:
            inputs = workdir / f"in-{size}"
            write_mosaic(inputs / f"mosaic_{size}.tif", cells, size, size)
            out = workdir / f"out-{size}"
            args = [
                "--input-dir", str(inputs), "--output-dir", str(out),
                "--segformer-config", str(config), "--segformer-weights", str(weights),
                "--device", device, "--tiled", "--tile-size", str(tile_size),
                "--tile-overlap", str(overlap), "--points-per-side", str(points_per_side),
                "--crop-n-layers", "0",
            ]  # fmt: skip
            env = dict(os.environ, CORAL_ENV_FILE=os.devnull, FIFTYONE_DO_NOT_TRACK="true")
            command = [sys.executable, "-c", LAUNCHER, "0" if full_models else "1", *args]
            peak, wall, stderr = peak_rss_of(command, env, ROOT)
            record = json.loads((out / ".per_image" / f"mosaic_{size}.json").read_text())
            seconds = record["seconds"]["total"]
            megapixels = size * size / 1e6
            gpu = [json.loads(line)["peak_gpu_mib"] for line in stderr.splitlines()
                   if line.startswith('{"peak_gpu_mib"')]  # fmt: skip
            rows.append(dict(size=size, megapixels=round(megapixels, 3),
                             tiles=record["mosaic"]["tiles"],
                             colonies=record["mosaic"]["colonies"], peak_rss_mib=peak,
                             peak_gpu_mib=gpu[0] if gpu else None, seconds=round(seconds, 2),
                             wall_s=round(wall, 1),
                             s_per_mp=round(seconds / megapixels, 4),
                             s_per_tile=round(seconds / record["mosaic"]["tiles"], 3)))  # fmt: skip
            print(f"  {size:6d} px: {rows[-1]['tiles']:5d} tiles, peak RSS {peak:6d} MiB, "
                  f"{seconds:8.1f} s, {seconds / megapixels:.3f} s/MP, "
                  f"{rows[-1]['s_per_tile']:.2f} s/tile", flush=True)  # fmt: skip
            shutil.rmtree(inputs)  # a 16k mosaic is hundreds of MB
            shutil.rmtree(out, ignore_errors=True)
    peaks = [r["peak_rss_mib"] for r in rows]
    speeds = [r["s_per_mp"] for r in rows]
    memory_growth = max(peaks) / min(peaks) - 1
    speed_spread = max(speeds) / min(speeds) - 1
    # a side that is no multiple of the stride costs whole tiles for a strip: per tile, the
    # work should not depend on the mosaic's size at all
    per_tile = [r["s_per_tile"] for r in rows]
    tile_spread = max(per_tile) / min(per_tile) - 1
    figures = dict(
        benchmark="scale", device=device, models="full" if full_models else "tiny",
        tile_size=tile_size, overlap=overlap, points_per_side=points_per_side, rows=rows,
        memory_growth=round(memory_growth, 3), memory_flat=memory_growth <= MEMORY_FLAT_WITHIN,
        speed_spread=round(speed_spread, 3), speed_flat=speed_spread <= SPEED_FLAT_WITHIN,
        s_per_tile_spread=round(tile_spread, 3),
    )  # fmt: skip
    print(f"\ntiled two-stage inference, {'full' if full_models else 'tiny'} models on {device}, "
          f"tiles of {tile_size} px (overlap {overlap})")  # fmt: skip
    print(
        f"  peak RSS {'flat' if figures['memory_flat'] else 'GROWS'} "
        f"(+{memory_growth:.0%} from smallest to largest; target {MEMORY_FLAT_WITHIN:.0%})"
    )
    print(f"  s/MP {'flat' if figures['speed_flat'] else 'NOT FLAT'} "
          f"({speed_spread:.0%} spread; target {SPEED_FLAT_WITHIN:.0%}); s/tile "
          f"{tile_spread:.0%} spread")  # fmt: skip
    print(json.dumps(figures))
    return figures


def write_mosaic_outputs(folder: Path, size: int, classes: list[str]) -> int:
    """A mosaics/ folder as tiled inference writes it: <stem>.classes.tif (uint8, 255
    outside) and <stem>.geojson, one disc colony per CELL x CELL px; returns the count."""
    import numpy as np
    import rasterio
    import shapely
    from rasterio.transform import Affine

    from mosaic.geojson import GeoJSONWriter
    from mosaic.seams import Colony

    folder.mkdir(parents=True, exist_ok=True)
    stem = f"mosaic_{size}"
    rng = np.random.default_rng(size)
    transform = Affine(0.001, 0, 500_000.0, 0, -0.001, 8_200_000.0)
    profile = dict(driver="GTiff", width=size, height=size, count=1, dtype="uint8",
                   crs="EPSG:32755", transform=transform, tiled=True, blockxsize=512,
                   blockysize=512, compress="deflate", BIGTIFF="IF_SAFER", nodata=255)  # fmt: skip
    colonies = GeoJSONWriter(folder / f"{stem}.geojson", transform,
                             rasterio.crs.CRS.from_epsg(32755), classes, 1e-6, stem)  # fmt: skip
    count = 0
    with rasterio.open(folder / f"{stem}.classes.tif", "w", **profile) as dst:
        dst.update_tags(classes=json.dumps(classes), source=f"{stem}.tif")
        for row0 in range(0, size, CELL):
            rows = min(CELL, size - row0)
            strip = np.zeros((rows, size), np.uint8)
            strip[:, -3:] = 255  # a thin collar outside the mosaic
            found = []
            for col0 in range(0, size - CELL + 1, CELL):
                if rows < CELL:
                    break
                radius = int(rng.integers(60, 200))
                cy, cx = CELL // 2, col0 + CELL // 2
                label = 1 + count % (len(classes) - 1)
                yy, xx = np.ogrid[-radius : radius + 1, -radius : radius + 1]
                disc = yy**2 + xx**2 <= radius**2
                window = strip[cy - radius : cy + radius + 1, cx - radius : cx + radius + 1]
                window[disc] = label
                polygon = shapely.Point(cx, row0 + cy).buffer(radius, quad_segs=16)
                found.append(Colony(label, 0.9, False, polygon, ["sam"]))
                count += 1
            dst.write(strip[None], window=rasterio.windows.Window(0, row0, size, rows))
            colonies.write(found)
    colonies.commit()
    return count


def reef_stats_bench(
    sizes: str | int | tuple = "10000,20000,40000", keep: bool = False, truth: bool = False
) -> dict:
    """Peak RSS of reef_stats.py summarize on mosaics of each size (see the module's text)."""
    sizes = _sizes(sizes)
    classes = ["background", "Acropora", "Porites", "Pocillopora"]
    rows = []
    with _workdir("scale-bench-stats-", keep) as workdir:
        for size in sizes:
            mosaics = workdir / f"mosaics-{size}"
            colonies = write_mosaic_outputs(mosaics, size, classes)
            out = workdir / f"stats-{size}"
            command = [sys.executable, str(ROOT / "reef_stats.py"), "summarize", str(mosaics),
                       "--output-dir", str(out)]  # fmt: skip
            if truth:  # the colonies as corrected polygons, over an ortho of the same grid
                ortho = workdir / f"ortho-{size}" / f"mosaic_{size}.tif"
                ortho.parent.mkdir()
                shutil.copy(mosaics / f"mosaic_{size}.classes.tif", ortho)
                command += ["--truth", str(mosaics / f"mosaic_{size}.geojson"),
                            "--images", str(ortho)]  # fmt: skip
            env = dict(os.environ, CORAL_ENV_FILE=os.devnull, MPLBACKEND="Agg")
            peak, wall, _ = peak_rss_of(command, env, ROOT)
            rows.append(dict(size=size, colonies=colonies, peak_rss_mib=peak,
                             wall_s=round(wall, 1)))  # fmt: skip
            print(f"  {size:6d} px: {colonies:6d} colonies, reef_stats peak RSS {peak:6d} MiB, "
                  f"{wall:7.1f} s", flush=True)  # fmt: skip
            if not (out / "cover.csv").is_file():
                raise RuntimeError(f"reef_stats.py summarize wrote nothing for {size} px")
            shutil.rmtree(mosaics)
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(workdir / f"ortho-{size}", ignore_errors=True)
    peaks = [r["peak_rss_mib"] for r in rows]
    growth = max(peaks) / min(peaks) - 1
    figures = dict(
        benchmark="reef_stats_scale", truth=truth, rows=rows, memory_growth=round(growth, 3),
        memory_flat=growth <= MEMORY_FLAT_WITHIN, under_2_gib=max(peaks) <= STATS_PEAK_MIB,
    )  # fmt: skip
    what = "mosaics/ outputs beside corrected polygons" if truth else "mosaics/ outputs"
    print(f"\nreef_stats.py summarize on {what}: peak RSS at most {max(peaks)} MiB "
          f"(target {STATS_PEAK_MIB}), +{growth:.0%} from smallest to largest "
          f"(target {MEMORY_FLAT_WITHIN:.0%})")  # fmt: skip
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    fire.Fire(main, serialize=lambda _: None)
