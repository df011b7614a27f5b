"""The CVAT function on a CPU: one quadrat through the packaged function's handler.

    python bench/function_cpu_bench.py                      # 1920 px, CoralSCoP's settings
    python bench/function_cpu_bench.py --paths fast --profile    # where the time goes
    python bench/function_cpu_bench.py --pred-iou-thresh 0 --stability-thresh 0  # every mask
    python bench/function_cpu_bench.py --size 256 --points 2 --crop-layers 0      # smoke run

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
CoralSCoP's thresholds keep few proposals; both paths do the same work on them. The
answers of the two paths are compared item by item as CVAT decodes them (masks matched
by IoU). Threads: torch's default, i.e. the function's `cores_given()`. Prints a table
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

import cv2  # noqa: E402
import fire  # noqa: E402
import numpy as np  # noqa: E402

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


def _child(path: str, folder: str, body: str, answer: str, profile: bool) -> None:
    """One path in this process: start the function, answer one request."""
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
    seconds = {}
    inner = model.__call__

    def timed_call(image):
        result = inner(image)
        seconds.update(result.seconds)
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
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    print("RECORD " + json.dumps(record), flush=True)
    if profiler:
        stats = pstats.Stats(profiler).sort_stats("cumulative")
        stats.print_stats(25)


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
    from scipy.optimize import linear_sum_assignment

    a = decode_items(reference, size, size)
    b = decode_items(other, size, size)
    result = {"reference_items": len(a), "other_items": len(b)}
    if not a or not b:
        return {**result, "matched": 0, "mean_iou": None, "same_label": 0}
    flat_a = np.stack([m.reshape(-1) for _, m in a]).astype(np.float32)
    flat_b = np.stack([m.reshape(-1) for _, m in b]).astype(np.float32)
    inter = flat_a @ flat_b.T
    union = flat_a.sum(1)[:, None] + flat_b.sum(1)[None, :] - inter
    iou = inter / np.maximum(union, 1)
    rows, cols = linear_sum_assignment(-iou)
    matched = iou[rows, cols]
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
    _child_path: str | None = None,
    _folder: str | None = None,
    _body_file: str | None = None,
    _answer: str | None = None,
) -> None:
    if _child_path:
        _child(_child_path, _folder, _body_file, _answer, profile)
        return None
    chosen = [p.strip() for p in str(paths).replace(" ", "").split(",") if p.strip()]
    unknown = set(chosen) - set(PATHS)
    if unknown:
        raise SystemExit(f"--paths: unknown {sorted(unknown)}; choose from {PATHS}")
    with tempfile.TemporaryDirectory(prefix="function-bench-") as scratch:
        work = Path(scratch)
        folder = _bundle(work)
        body = _body(work, size)
        env = {
            **os.environ,
            "CORAL_SAM_POINTS_PER_SIDE": str(points),
            "CORAL_SAM_CROP_N_LAYERS": str(crop_layers),
            "CORAL_CACHE_DIR": str(work / "cache"),
        }
        # CoralSCoP's thresholds unless given; 0 and 0 make every prompt a proposal that is
        # upsampled, cleaned and deduplicated (the most work real weights could cause)
        if pred_iou_thresh is not None:
            env["CORAL_SAM_PRED_IOU_THRESH"] = str(pred_iou_thresh)
        if stability_thresh is not None:
            env["CORAL_SAM_STABILITY_THRESH"] = str(stability_thresh)
        records, answers = [], {}
        for path in chosen:
            answer = work / f"answer-{path}.json"
            runtime = "torch" if path == "pytorch" else "auto"
            command = [
                sys.executable, __file__, f"--_child_path={path}", f"--_folder={folder}",
                f"--_body_file={body}", f"--_answer={answer}", f"--profile={profile}",
            ]  # fmt: skip
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
            records.append(record)
            answers[path] = json.loads(answer.read_text())
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
    line = json.dumps(report)
    print(line)
    if out:
        Path(out).write_text(line + "\n")
    return None  # printed above; fire would print a returned dict again


if __name__ == "__main__":
    fire.Fire(main)
