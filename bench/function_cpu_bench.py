"""The CVAT function on a CPU: one quadrat through the packaged function's handler.

    python bench/function_cpu_bench.py                      # 1920 px, CoralSCoP's settings
    python bench/function_cpu_bench.py --paths fast --profile    # where the time goes
    python bench/function_cpu_bench.py --pred-iou-thresh 0 --stability-thresh 0  # every mask
    python bench/function_cpu_bench.py --size 256 --points 2 --crop-layers 0      # smoke run
    python bench/function_cpu_bench.py --kept 0,100,300,1000    # by proposals kept (issue 24)

What CVAT's server waits for (CVAT_NUCLIO_DEFAULT_TIMEOUT, 120 s by default): a model
packaged by deploy_as_zip.sh (nuclio/package.py), unzipped, started by init_context and
called through nuclio_sdk's test Platform with the JSON body CVAT sends (a base64 JPEG
of a synthetic demo quadrat). Each path runs in its own process, one after the other on
the same bundle and body, so that peak memory is its own:

- `pytorch`: segment-anything's PyTorch code, as the function ran before: the image
  encoder in PyTorch and the batched prompt decoder (64 prompts per batch);
- `fast`: the defaults on a CPU: the image encoder through OpenVINO (models/sam_openvino.py,
  compiled once per weights in init_context, not per request) and staged prompt decoding
  (models/sam_lean.py).

Weights are random (the demo config's semantic model, a CoralSCoP-shaped ViT-B), so
CoralSCoP's thresholds keep no proposal: such a run measures the encoder and the
filters, not the proposals a real checkpoint keeps (hundreds). --kept K,... sets the
count instead: a calibration run records the model's own IoU prediction and coral
probability for every prompt (2048 at 32 x 32 points with one crop layer) without
upscaling any, and each run then puts the IoU threshold in the widest gap between the
model's sorted predictions next to the K-th, the coral cut just under the smallest
coral probability of those K, and the stability threshold at 0 (computed, drops none):
K proposals pass all three filters and are decoded in full. The kept count each run
really had (counted before NMS) and its items by source (SAM or the semantic fallback;
random masks are noise, so NMS and clean-up may leave few) are reported, and the SAM
items of the two paths are compared. The
answers of the two paths are compared item by item as CVAT decodes them (masks matched
by IoU). Threads: torch's default, i.e. models.cpu_precision.cores_given(). Prints a table
and one JSON line; --out writes the JSON.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import cv2  # noqa: E402
import fire  # noqa: E402
import numpy as np  # noqa: E402
from mask_matching import one_to_one  # noqa: E402

PATHS = ("pytorch", "fast")
TINY_CONFIG = ROOT / "configs" / "reef_demo_tiny.py"


def _bundle(work: Path) -> Path:
    """deploy_as_zip.sh's bundle of random weights, unzipped; returns its nuclio/ folder."""
    from models.coralscop import write_random_checkpoint
    from models.random_checkpoint import write_random_semantic_checkpoint
    from nuclio import package

    semantic = write_random_semantic_checkpoint(TINY_CONFIG, work / "semantic.pth")
    sam = write_random_checkpoint(work / "vit_b_coralscop.pth")
    status = package.main(
        ["benchfunction", str(semantic), str(TINY_CONFIG), str(sam), "--output",
         str(work / "nuclio.zip")]
    )  # fmt: skip
    if status:
        raise SystemExit("packaging failed")
    with zipfile.ZipFile(work / "nuclio.zip") as archive:
        archive.extractall(work / "unpacked")
    return work / "unpacked" / "nuclio"


def _body(work: Path, size: int) -> Path:
    from dataset.reef_demo import render_sample

    image, _ = render_sample(0, size)
    ok, encoded = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95]
    )
    assert ok
    body = work / "body.json"
    body.write_text(json.dumps({"image": base64.b64encode(encoded.tobytes()).decode()}))
    return body


def _child(
    path: str, folder: str, body: str, answer: str, profile: bool, thresholds: str | None = None
) -> None:
    """One path in this process: start the function, answer one request. thresholds:
    "IOU:CORAL" (a --kept run), or "calibrate" (record every prompt's scores, keep none)."""
    import cProfile
    import importlib.util
    import pstats

    import nuclio_sdk
    import nuclio_sdk.test

    spec = importlib.util.spec_from_file_location("function_main", Path(folder) / "main.py")
    main = importlib.util.module_from_spec(spec)
    sys.modules["function_main"] = main
    spec.loader.exec_module(main)
    platform = nuclio_sdk.test.Platform()
    started = time.perf_counter()
    context = platform._get_handler_context(main.handler)  # init_context, as Nuclio runs it
    init_seconds = time.perf_counter() - started
    model = context.user_data.model
    generator = model.instances.generator
    if path == "pytorch":
        generator.staged = False
    if thresholds == "calibrate":
        scores = _record_scores(generator)
    elif thresholds:
        iou, coral = (float(v) for v in thresholds.split(":"))
        generator.settings.pred_iou_thresh, generator.settings.coral_thresh = iou, coral
        generator.settings.stability_score_thresh = 0.0
    kept = _count_kept(generator)
    seconds, sources = {}, []
    inner = model.__call__

    def timed_call(image):
        result = inner(image)
        seconds.update(result.seconds)
        sources.extend(inst.source for inst in result.instances)
        return result

    context.user_data.model = _Callable(timed_call, model)
    event = nuclio_sdk.Event(body=Path(body).read_text())
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    response = platform.call_handler(main.handler, event)
    if profiler:
        profiler.disable()
    handler_seconds = time.perf_counter() - started
    if response.status_code != 200:
        raise SystemExit(f"{path}: the function answered {response.status_code}: {response.body}")
    Path(answer).write_text(response.body)
    items = json.loads(response.body)
    record = {
        "path": path,
        "encoder_runtime": model.instances.encoder_runtime,
        "staged_decoding": generator.staged,
        "threads": __import__("torch").get_num_threads(),
        "init_s": round(init_seconds, 2),
        "handler_s": round(handler_seconds, 2),
        "stages_s": {k: round(v, 2) for k, v in seconds.items()},
        "items": len(items),
        "items_sam": sources.count("sam"),
        "items_semantic": sources.count("semantic"),
        "kept": kept[0],
        "sources": sources,  # the answer's items in order
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    if thresholds == "calibrate":
        record["scores"] = scores
    print("RECORD " + json.dumps(record), flush=True)
    if profiler:
        stats = pstats.Stats(profiler).sort_stats("cumulative")
        stats.print_stats(25)


def _count_kept(generator) -> list[int]:
    """Counts the outputs that pass the IoU and coral filters (with stability at 0, the
    proposals decoded in full), before any NMS."""
    kept = [0]
    inner = generator._decode_kept

    def counted(points):
        low_res, iou, coral = inner(points)
        kept[0] += len(iou)
        return low_res, iou, coral

    generator._decode_kept = counted
    return kept


def _record_scores(generator) -> dict:
    """Every prompt's IoU prediction and coral probability, from the staged decoder's own
    first steps, keeping none (nothing is upscaled)."""
    import torch

    generator.staged = True
    module = sys.modules[type(generator).__module__]
    lean = sys.modules[module.decode_prompts.__module__]
    scores = {"iou": [], "coral": []}

    def scores_only(sam, features, points, multimask, iou_threshold, use_category, *rest):
        queries, keys, iou = lean.prompt_scores(sam, features, points, multimask)
        coral = (lean.coral_probability(sam, queries, keys, multimask) if use_category
                 else torch.ones_like(iou))  # fmt: skip
        scores["iou"] += iou.flatten().tolist()
        scores["coral"] += coral.flatten().tolist()
        empty = iou.new_zeros(0)
        return lean.Decoded(iou.new_zeros((0, 1, 1)), empty, empty)

    module.decode_prompts = scores_only
    return scores


def thresholds_for(scores: dict, kept: int) -> tuple[float, float]:
    """(IoU threshold, coral cut) that let about `kept` prompts through both filters: the
    IoU threshold in the widest gap between sorted predictions within 1 % of the kept-th
    (never on a prediction, nor in a gap so narrow that the two paths' rounding could
    move a prompt across), the coral cut under the smallest coral probability of the
    prompts above it."""
    search = kept // 100
    iou = np.asarray(scores["iou"])
    coral = np.asarray(scores["coral"])
    order = np.argsort(-iou)
    ranked = iou[order]
    if kept <= 0:
        return float(abs(ranked[0]) + 1.0), 0.5
    if kept >= len(ranked):
        return 0.0, max(float(coral.min()) - 1e-3, 0.0)
    low, high = max(kept - search, 1), min(kept + search, len(ranked) - 1)
    gaps = ranked[low - 1 : high] - ranked[low : high + 1]
    cut = low + int(np.argmax(gaps))  # the first `cut` prompts are kept
    threshold = float((ranked[cut - 1] + ranked[cut]) / 2)
    if threshold == 0:  # 0 turns the filter off
        threshold = float(np.nextafter(0.0, 1.0))
    passing = coral[order[:cut]]
    return threshold, max(float(passing.min()) / 2, 0.0)


class _Callable:
    """The model with its call timed (the handler calls model(image), model.classes)."""

    def __init__(self, call, model) -> None:
        self._call, self._model = call, model

    def __call__(self, image):
        return self._call(image)

    def __getattr__(self, name):
        return getattr(self._model, name)


def decode_items(items: list[dict], height: int, width: int) -> list[tuple[str, np.ndarray]]:
    """(label, full-size bool mask) per item, decoded as CVAT's server decodes them."""
    decoded = []
    for item in items:
        xtl, ytl, xbr, ybr = item["mask"][-4:]
        crop = np.asarray(item["mask"][:-4], dtype=np.uint8).reshape(ybr - ytl + 1, xbr - xtl + 1)
        mask = np.zeros((height, width), dtype=bool)
        mask[ytl : ybr + 1, xtl : xbr + 1] = crop > 0
        decoded.append((item["label"], mask))
    return decoded


def compare_answers(reference: list[dict], other: list[dict], size: int) -> dict:
    """Instances of `other` matched one to one to `reference` by IoU (Hungarian)."""
    a = decode_items(reference, size, size)
    b = decode_items(other, size, size)
    result = {"reference_items": len(a), "other_items": len(b)}
    if not a or not b:
        return {**result, "matched": 0, "mean_iou": None, "same_label": 0}
    rows, cols, matched = one_to_one(np.stack([m for _, m in a]), np.stack([m for _, m in b]))
    return {
        **result,
        "matched_iou_ge_0.9": int((matched >= 0.9).sum()),
        "mean_iou": round(float(matched.mean()), 4),
        "min_iou": round(float(matched.min()), 4),
        "same_label": int(sum(a[r][0] == b[c][0] for r, c in zip(rows, cols, strict=True))),
    }


def main(
    size: int = 1920,
    points: int = 32,
    crop_layers: int = 1,
    paths: str = ",".join(PATHS),
    pred_iou_thresh: float | None = None,
    stability_thresh: float | None = None,
    profile: bool = False,
    out: str | None = None,
    kept: str | int | tuple | None = None,
    _child_path: str | None = None,
    _folder: str | None = None,
    _body_file: str | None = None,
    _answer: str | None = None,
    _thresholds: str | None = None,
) -> None:
    if _child_path:
        _child(_child_path, _folder, _body_file, _answer, profile, _thresholds)
        return None
    if kept is not None:
        counts = [int(k) for k in str(kept).strip("()[] ").split(",") if k.strip()]
        return kept_main(size, points, crop_layers, paths, counts, out)
    chosen = _paths(paths)
    with tempfile.TemporaryDirectory(prefix="function-bench-") as scratch:
        work = Path(scratch)
        folder, body, env = _setup(work, size, points, crop_layers)
        # CoralSCoP's thresholds unless given; 0 and 0 make every prompt a proposal that is
        # upsampled, cleaned and deduplicated (the most work real weights could cause)
        if pred_iou_thresh is not None:
            env["CORAL_SAM_PRED_IOU_THRESH"] = str(pred_iou_thresh)
        if stability_thresh is not None:
            env["CORAL_SAM_STABILITY_THRESH"] = str(stability_thresh)
        records, answers = [], {}
        for path in chosen:
            record, answers[path] = _run_path(path, folder, body, env, work, profile)
            records.append(record)
        report = {
            "bench": "function_cpu",
            "size": size,
            "points_per_side": points,
            "crop_n_layers": crop_layers,
            "pred_iou_thresh": pred_iou_thresh,
            "stability_thresh": stability_thresh,
            "cpu_cores": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d"),
            "runs": records,
        }
        if len(answers) == 2:
            report["answers"] = compare_answers(answers["pytorch"], answers["fast"], size)
            by = {r["path"]: r["handler_s"] for r in records}
            report["speedup"] = round(by["pytorch"] / by["fast"], 2)
    print(f"{'path':8} {'encoder':9} {'init s':>7} {'handler s':>10} {'items':>6} {'RSS MiB':>8}")
    for r in records:
        print(
            f"{r['path']:8} {r['encoder_runtime']:9} {r['init_s']:7.1f} {r['handler_s']:10.1f} "
            f"{r['items']:6d} {r['peak_rss_mib']:8d}   stages {r['stages_s']}"
        )
    if "answers" in report:
        print(f"speed-up {report['speedup']}x; answers: {report['answers']}")
    _emit(report, out)
    return None  # printed above; fire would print a returned dict again


def kept_main(
    size: int, points: int, crop_layers: int, paths: str, counts: list[int], out: str | None
) -> None:
    """The function's time by proposals kept (see the module's text)."""
    chosen = _paths(paths)
    rows = []
    with tempfile.TemporaryDirectory(prefix="function-bench-") as scratch:
        work = Path(scratch)
        folder, body, env = _setup(work, size, points, crop_layers)
        calibration, _ = _run_path("fast", folder, body, env, work, False, "calibrate")
        scores = calibration.pop("scores")
        print(f"calibration: {len(scores['iou'])} prompts scored in "
              f"{calibration['handler_s']:.1f} s", flush=True)  # fmt: skip
        for count in counts:
            iou, coral = thresholds_for(scores, count)
            answers = {}
            for path in chosen:
                record, answers[path] = _run_path(path, folder, body, env, work, False,
                                                  f"{iou!r}:{coral!r}")  # fmt: skip
                sources = record.pop("sources")
                answers[path] = [a for a, s in zip(answers[path], sources, strict=True)
                                 if s == "sam"]  # fmt: skip
                row = {"asked": count, "pred_iou_thresh": round(iou, 6),
                       "coral_thresh": round(coral, 6), **record}  # fmt: skip
                rows.append(row)
                print(f"  kept {record['kept']:5d} (asked {count:4d}) {path:8} handler "
                      f"{record['handler_s']:7.1f} s, SAM {record['stages_s'].get('sam', 0):7.1f}"
                      f" s, items {record['items_sam']} SAM + {record['items_semantic']} "
                      f"semantic, peak RSS {record['peak_rss_mib']} MiB", flush=True)  # fmt: skip
            if len(answers) == 2:
                same = compare_answers(answers["pytorch"], answers["fast"], size)
                rows[-1]["same_sam_items"] = same
                print(f"    SAM items, pytorch vs fast: {same}", flush=True)
    report = {
        "bench": "function_cpu_kept", "size": size, "points_per_side": points,
        "crop_n_layers": crop_layers, "prompts": len(scores["iou"]),
        "cpu_cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"), "rows": rows,
    }  # fmt: skip
    _emit(report, out)


def _paths(paths: str) -> list[str]:
    chosen = [p.strip() for p in str(paths).replace(" ", "").split(",") if p.strip()]
    unknown = set(chosen) - set(PATHS)
    if unknown:
        raise SystemExit(f"--paths: unknown {sorted(unknown)}; choose from {PATHS}")
    return chosen


def _setup(work: Path, size: int, points: int, crop_layers: int) -> tuple[Path, Path, dict]:
    """The bundle, the request body and the function's environment."""
    folder = _bundle(work)
    body = _body(work, size)
    env = {
        **os.environ,
        "CORAL_SAM_POINTS_PER_SIDE": str(points),
        "CORAL_SAM_CROP_N_LAYERS": str(crop_layers),
        "CORAL_CACHE_DIR": str(work / "cache"),
    }
    return folder, body, env


def _run_path(
    path: str, folder: Path, body: Path, env: dict, work: Path, profile: bool,
    thresholds: str | None = None,
) -> tuple[dict, list]:  # fmt: skip
    """One path in a process of its own: its record and its answer's items."""
    answer = work / f"answer-{path}.json"
    runtime = "torch" if path == "pytorch" else "auto"
    command = [
        sys.executable, __file__, f"--_child_path={path}", f"--_folder={folder}",
        f"--_body_file={body}", f"--_answer={answer}", f"--profile={profile}",
    ]  # fmt: skip
    if thresholds:
        command.append(f"--_thresholds={thresholds}")
    run = subprocess.run(
        command, env={**env, "CORAL_SAM_ENCODER_RUNTIME": runtime},
        capture_output=True, text=True,
    )  # fmt: skip
    if run.returncode:
        raise SystemExit(f"{path} failed:\n{run.stderr[-4000:]}")
    lines = run.stdout.splitlines()
    record = json.loads(next(x for x in lines if x.startswith("RECORD "))[7:])
    if profile:
        print(f"--- profile of {path} ---")
        print("\n".join(x for x in lines if not x.startswith("RECORD ")))
    return record, json.loads(answer.read_text())


def _emit(report: dict, out: str | None) -> None:
    line = json.dumps(report)
    print(line)
    if out:
        Path(out).write_text(line + "\n")


if __name__ == "__main__":
    fire.Fire(main)
