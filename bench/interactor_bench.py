"""Click latency of the CVAT interactor, through its handler, on a 1920 px quadrat.

    python bench/interactor_bench.py                           # CPU: f32, and bf16 where native
    python bench/interactor_bench.py --size 512 --clicks 5 --frames 4 --sam tiny   # smoke

Targets (issue 25), CPU: the first click on a frame <= the image encoder's time measured
in the same run + 0.5 s; every further click <= 0.5 s (median and 95th percentile over
`clicks` clicks); GPU: first click <= 0.3 s, further clicks <= 50 ms. Memory: `frames`
frames clicked in turn stay within the embedding cache's budget (128 MiB here, so that
100 frames of ~4 MiB embeddings evict; the function's default is 512 MiB), and the
process's peak resident set grows by no more than the budget (+64 MiB of slack).

The function is nuclio/interactor/main.py as deployed: a bundle folder of links to the
repository's modules and a random CoralSCoP-shaped ViT-B checkpoint (no trained weights
exist here: the masks are noise, but every click runs the same encoder and decoder work,
whatever the weights; the answer's size follows the mask, so it is reported). Each click
is a request body as CVAT sends it (base64 JPEG of the frame, pos_points, neg_points,
obj_bbox), handled in this process as Nuclio would. The encoder time is measured alone on
the same frame, in the same process, before the clicks.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import fire  # noqa: E402
import numpy as np  # noqa: E402

from dataset.reef_demo import render_sample  # noqa: E402

MODULES = ("request_body.py",)
SOURCES = ("interactor", "models", "dataset", "inferencer.py", "settings.py")
FIRST_EXTRA_S, LATER_S = 0.5, 0.5  # CPU targets
GPU_FIRST_S, GPU_LATER_S = 0.3, 0.05


def make_bundle(folder: Path, sam: str) -> Path:
    """A function folder as deploy_as_zip.sh lays it out, made of links."""
    from models import coralscop

    folder.mkdir(parents=True, exist_ok=True)
    # a copy: main.py finds its weights beside its own (resolved) path
    (folder / "main.py").write_bytes((ROOT / "nuclio/interactor/main.py").read_bytes())
    for name in MODULES:
        (folder / name).symlink_to(ROOT / "nuclio" / name)
    for name in SOURCES:
        (folder / name).symlink_to(ROOT / name)
    if sam == "tiny":  # smoke runs: a tiny encoder in ViT-B's place (random weights)
        coralscop.SAM_VIT_B = coralscop.SAM_TINY
    coralscop.write_random_checkpoint(folder / "vit_b_coralscop.pth")
    return folder


def frame_bytes(size: int, seed: int) -> bytes:
    image = render_sample(seed, size, seed)[0]
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, 95])  # fmt: skip
    assert ok
    return encoded.tobytes()


def _context():
    logger = types.SimpleNamespace(info=lambda *a: None, warn=print, error=print)

    class Response:
        def __init__(self, body, headers, content_type, status_code):
            self.body, self.status_code = body, status_code

    return types.SimpleNamespace(logger=logger, user_data=types.SimpleNamespace(),
                                 Response=Response)  # fmt: skip


def _click(main, context, data: str, point, negative=None) -> tuple[float, int, dict]:
    body = json.dumps({"image": data, "pos_points": [point], "obj_bbox": [],
                       "neg_points": [] if negative is None else [negative]})  # fmt: skip
    started = time.perf_counter()
    response = main.handler(context, types.SimpleNamespace(body=body))
    seconds = time.perf_counter() - started
    assert response.status_code == 200, response.body
    return seconds, len(response.body), json.loads(response.body)


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def run_precision(
    main, size: int, clicks: int, frames: int, precision: str, budget_mb: int
) -> dict:
    import torch

    os.environ["CORAL_CPU_PRECISION"] = precision
    os.environ["CORAL_INTERACTOR_CACHE_MB"] = str(budget_mb)
    context = _context()
    main.init_context(context)
    segmenter = context.user_data.segmenter
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rng = np.random.default_rng(0)
    data = frame_bytes(size, 0)
    encoded = base64.b64encode(data).decode()
    # the encoder alone on this frame (decoded as the handler decodes it), twice: warm-up
    from request_body import read_image

    rgb = read_image(data)
    segmenter.predictor.embed(rgb)
    started = time.perf_counter()
    segmenter.predictor.embed(rgb)
    encoder_s = time.perf_counter() - started
    segmenter.cache.clear()
    first_s, first_bytes, _ = _click(main, context, encoded, [size / 2, size / 2])
    later, sizes = [], []
    for _ in range(clicks):
        point = rng.uniform(0.05 * size, 0.95 * size, 2).round(1).tolist()
        negative = rng.uniform(0.05 * size, 0.95 * size, 2).round(1).tolist()
        seconds, length, _ = _click(main, context, encoded, point,
                                    negative if rng.random() < 0.5 else None)  # fmt: skip
        later.append(seconds)
        sizes.append(length)
    # memory: frames clicked in turn, the cache within its budget, the process's resident
    # set growing by no more than the budget (the kernel's peak, before and after)
    budget = budget_mb * 2**20
    peak_cache = 0
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for seed in range(1, frames + 1):
        other = base64.b64encode(frame_bytes(size, seed)).decode()
        _click(main, context, other, [size / 3, size / 3])
        peak_cache = max(peak_cache, segmenter.cache.bytes)
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_before
    median, p95 = _percentile(later, 50), _percentile(later, 95)
    first_target = GPU_FIRST_S if device == "cuda" else encoder_s + FIRST_EXTRA_S
    later_target = GPU_LATER_S if device == "cuda" else LATER_S
    return dict(
        precision=precision, device=device, encoder_s=round(encoder_s, 3),
        first_click_s=round(first_s, 3), first_target_s=round(first_target, 3),
        later_median_s=round(median, 4), later_p95_s=round(p95, 4),
        later_target_s=later_target, answer_bytes_median=int(np.median(sizes)),
        first_answer_bytes=first_bytes, frames=frames, cache_budget_mib=budget_mb,
        cache_peak_mib=round(peak_cache / 2**20, 1), cache_entries=len(segmenter.cache),
        evictions=segmenter.cache.evictions, peak_rss_growth_mib=round(rss_growth, 1),
        first_ok=first_s <= first_target, later_ok=p95 <= later_target and median <= later_target,
        cache_ok=peak_cache <= budget and rss_growth <= budget_mb + 64,
    )  # fmt: skip


def main(size: int = 1920, clicks: int = 50, frames: int = 100, sam: str = "vit_b",
         precisions: str = "f32,bf16", budget_mb: int = 128) -> dict:  # fmt: skip
    from models.cpu_precision import choose_cpu_precision

    rows = []
    from models import coralscop

    # sam="tiny" puts a tiny encoder in ViT-B's place for this run only (make_bundle)
    cwd, path, vit_b = Path.cwd(), list(sys.path), coralscop.SAM_VIT_B
    with tempfile.TemporaryDirectory(prefix="interactor-bench-") as folder:
        bundle = make_bundle(Path(folder) / "nuclio-interactor", sam)
        sys.path.insert(0, str(bundle))
        os.chdir(bundle)
        try:
            import main as function  # noqa: PLC0415  (the bundle's main.py)

            wanted = precisions.split(",") if isinstance(precisions, str) else list(precisions)
            for precision in wanted:
                if precision == "bf16" and choose_cpu_precision("bf16").used != "bf16":
                    print("  bf16: not measured: this CPU has no native bf16 (AVX512_BF16, AMX)")
                    continue
                row = run_precision(function, size, clicks, frames, precision, budget_mb)
                rows.append(row)
                print(f"  {precision}: encoder {row['encoder_s']:.3f} s; first click "
                      f"{row['first_click_s']:.3f} s (target {row['first_target_s']:.3f}); "
                      f"later clicks median {row['later_median_s']:.3f} s, p95 "
                      f"{row['later_p95_s']:.3f} s (target {row['later_target_s']}); answers "
                      f"~{row['answer_bytes_median']} bytes; {frames} frames: cache peak "
                      f"{row['cache_peak_mib']} MiB of {budget_mb}, {row['evictions']} "
                      f"evictions, peak RSS +{row['peak_rss_growth_mib']} MiB",
                      flush=True)  # fmt: skip
        finally:  # this process (a test's) goes on without the bundle
            os.chdir(cwd)
            coralscop.SAM_VIT_B = vit_b
            sys.path[:] = path
            for name in ("main", "request_body"):
                sys.modules.pop(name, None)
    figures = dict(benchmark="interactor", size=size, clicks=clicks, sam=sam, rows=rows)
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    fire.Fire(main, serialize=lambda _: None)
