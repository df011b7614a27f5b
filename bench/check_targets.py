"""Issues 10 and 18's targets against the benchmarks' JSON lines: met, missed, or not measured.

    python bench/check_targets.py OUT/results.jsonl      # written by bench/gpu_session.sh

Each line of the file is one benchmark's JSON output (with a "run" name added by
gpu_session.sh). Figures taken on a CPU are listed but never count as meeting a
GPU target. The verdicts are in the table; the exit status is 0 whenever the file
could be read.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Target:
    name: str
    run: str  # gpu_session.sh's name of the benchmark run that measures it
    figure: Callable[[dict], float | None]  # None: the run measured nothing for this
    limit: float | None  # None: a figure the issue asks to report, with no target
    at_most: bool  # True: the figure must be <= limit; False: >= limit
    unit: str


def _ours(rows: list[dict]) -> dict:
    return next(r for r in rows if r["model"].startswith("ours"))


def _guide(rows: list[dict]) -> dict:
    return next(r for r in rows if r["model"].startswith("guide"))


def _kept_masks(result: dict) -> bool:
    """Whether both generators kept any proposal: with none, only the model work was timed."""
    return bool(result["stock_masks"] or result["our_masks"])


def _mask_match(result: dict) -> float | None:
    if not _kept_masks(result):
        return None
    if result["stock_masks"] != result["our_masks"]:
        return 0.0  # a different mask count fails the equality whatever the IoU
    return result["worst_best_iou"]


TARGETS = [
    Target("semantic 1920 px, end to end, bf16", "semantic_end2end",
           lambda r: _ours(r["rows"])["median_s"] * 1000, 80, True, "ms"),
    Target("semantic speed-up, ours bf16 vs the guide fp32", "semantic_end2end",
           lambda r: _ours(r["rows"])["speedup_vs_guide"], 10, False, "x"),
    Target("semantic speed-up, ours fp32 vs the guide fp32", "semantic_end2end_fp32",
           lambda r: _ours(r["rows"])["speedup_vs_guide"], None, False, "x"),
    Target("semantic 1920 px, end to end, guide fp32", "semantic_end2end",
           lambda r: _guide(r["rows"])["median_s"] * 1000, None, True, "ms"),
    Target("training, batch 4, data loading included", "train_b4",
           lambda r: r["images_per_s"], 20, False, "img/s"),
    Target("training peak memory, batch 4", "train_b4", lambda r: r["peak_gib"], 16, True, "GiB"),
    Target("training peak memory, batch 8, checkpointing", "train_b8_checkpointing",
           lambda r: r["peak_gib"], 16, True, "GiB"),
    Target("two-stage inference per 1920 px image", "two_stage",
           lambda r: r["total_s"] if r["proposals"] else None, 1.0, True, "s"),
    Target("two-stage, filters off (noise proposals)", "two_stage_no_filters",
           lambda r: r["total_s"] if r["proposals"] else None, None, True, "s"),
    Target("generator speed-up vs segment-anything", "generator",
           lambda r: r["speedup"] if _kept_masks(r) else None, 5, False, "x"),
    Target("generator masks match (worst best-match IoU)", "generator", _mask_match,
           0.99, False, "IoU"),
    Target("generator speed-up, filters off", "generator_no_filters",
           lambda r: r["speedup"] if _kept_masks(r) else None, 5, False, "x"),
    Target("generator masks match, filters off", "generator_no_filters", _mask_match,
           0.99, False, "IoU"),
]  # fmt: skip


def check(results: list[dict]) -> list[tuple[Target, str, str]]:
    """(target, measured figure as text, verdict) for each target."""
    by_run = {r.get("run", r.get("benchmark")): r for r in results}
    rows = []
    for target in TARGETS:
        result = by_run.get(target.run)
        if result is None:
            rows.append((target, "-", "not measured"))
            continue
        value = target.figure(result)
        if value is None:  # e.g. peak GPU memory of a CPU run, no proposal kept
            rows.append((target, "-", "not measured"))
            continue
        if target.limit is None:
            verdict = "reported"
        elif target.at_most:
            verdict = "met" if value <= target.limit else "MISSED"
        else:
            verdict = "met" if value >= target.limit else "MISSED"
        if str(result.get("device", "cpu")).lower().startswith("cpu"):
            verdict = "CPU figure, not a target run"
        rows.append((target, f"{value:.3g} {target.unit}", verdict))
    return rows


def main(path: str) -> int:
    results = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    rows = check(results)
    print(f"{'target':48} {'limit':>12} {'measured':>14}  verdict")
    for target, measured, verdict in rows:
        limit = (
            "-"
            if target.limit is None
            else f"{'<=' if target.at_most else '>='} {target.limit:g} {target.unit}"
        )
        print(f"{target.name:48} {limit:>12} {measured:>14}  {verdict}")
    met = sum(verdict == "met" for *_, verdict in rows)
    with_limit = sum(target.limit is not None for target in TARGETS)
    print(f"{met} of {with_limit} targets met")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
