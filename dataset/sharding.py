"""Dividing a batch of images among the processes of a sharded run, balanced by pixel count.

Inference time grows with an image's pixels (the semantic model's windows, SAM's
full-size masks, the fusion), not with its file size, so each image weighs its
pixel count, read from its header. The split is the classic longest-first greedy
rule (each image, largest first, goes to the process with the fewest pixels so
far): no process gets more than the mean plus the largest image. It depends on
the sizes and their order alone, so every process computes the same split.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from pathlib import Path

from dataset.image_io import ImageReadError, read_header


def pixel_count(path: str | Path) -> int:
    """Width x height from the image's header; 0 for a file that cannot be read (it fails
    at once when processed, where the failure is named)."""
    try:
        return read_header(path).pixels
    except ImageReadError:
        return 0


def partition(weights: Sequence[int], parts: int) -> list[list[int]]:
    """Indices into `weights` for each of `parts` shares, balanced by total weight.

    Ties go by position (earlier first) and to the lower share index, so the result
    is deterministic; each share lists its indices in ascending order."""
    if parts < 1:
        raise ValueError(f"parts must be at least 1, not {parts}")
    shares: list[list[int]] = [[] for _ in range(parts)]
    loads = [(0, part) for part in range(parts)]  # a heap of (total weight, share index)
    for index in sorted(range(len(weights)), key=lambda i: (-weights[i], i)):
        load, part = heapq.heappop(loads)
        shares[part].append(index)
        heapq.heappush(loads, (load + weights[index], part))
    return [sorted(share) for share in shares]
