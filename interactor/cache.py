"""Image embeddings kept between clicks on the same frame.

CVAT sends the whole frame with every click, but SAM needs its image encoder (seconds on
a CPU) once per frame; each click is then a cheap prompt decode. The cache is keyed by a
hash of the frame's bytes exactly as CVAT sent them, so a click on a cached frame does
not even decode the image. It is bounded by bytes, not entries (a ViT-B embedding is
4 MiB in f32), and drops the least recently used frame first: annotators move forward
through a task and seldom come back to old frames.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from collections import OrderedDict
from typing import Protocol

BUDGET_VARIABLE = "CORAL_INTERACTOR_CACHE_MB"
DEFAULT_BUDGET_MB = 512.0
MIB = 1024 * 1024


class Sized(Protocol):
    """What the cache can hold: anything that states its size in bytes."""

    @property
    def nbytes(self) -> int: ...


def frame_key(data: bytes) -> str:
    """The cache key of a frame: sha256 of its bytes as they came (no decoding)."""
    return hashlib.sha256(data).hexdigest()


def cache_budget_bytes() -> int:
    """The cache budget from CORAL_INTERACTOR_CACHE_MB (MiB, fractions allowed, 0 turns
    caching off), default 512 MiB; a value that is not a finite size >= 0 is a ValueError
    naming the variable, so a typo stops the function at start, not at the first click."""
    raw = os.environ.get(BUDGET_VARIABLE, "").strip()
    if not raw:
        return int(DEFAULT_BUDGET_MB * MIB)
    try:
        budget_mb = float(raw)
    except ValueError:
        budget_mb = math.nan
    if not math.isfinite(budget_mb) or budget_mb < 0:
        raise ValueError(
            f"{BUDGET_VARIABLE}={raw!r}: give the embedding cache's size in MiB "
            f"(a number >= 0, e.g. {DEFAULT_BUDGET_MB:.0f}; 0 keeps nothing)"
        )
    return int(budget_mb * MIB)


class EmbeddingCache:
    """Least-recently-used mapping bounded by the total `nbytes` of its values.

    An entry larger than the whole budget is not kept (it would evict everything and
    still not fit). Thread-safe: Nuclio may serve several requests of one process at
    once, and an OrderedDict reordered from two threads can lose entries.
    """

    def __init__(self, budget_bytes: int) -> None:
        if budget_bytes < 0:
            raise ValueError(f"cache budget {budget_bytes} bytes: must be >= 0")
        self.budget_bytes = int(budget_bytes)
        self._entries: OrderedDict[str, Sized] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._entries

    def get(self, key: str) -> Sized | None:
        """The value under `key` (now the most recently used), or None; counts a hit or miss."""
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: str, value: Sized) -> bool:
        """Keep `value` under `key` as the most recently used entry, evicting the least
        recently used ones until it fits; False (and nothing kept) when it alone exceeds
        the budget."""
        size = int(value.nbytes)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= int(old.nbytes)
            if size > self.budget_bytes:
                return False
            while self._entries and self.bytes + size > self.budget_bytes:
                _, evicted = self._entries.popitem(last=False)
                self.bytes -= int(evicted.nbytes)
                self.evictions += 1
            self._entries[key] = value
            self.bytes += size
            return True

    def clear(self) -> None:
        """Drop every entry (the counters stay: they describe the worker's life)."""
        with self._lock:
            self._entries.clear()
            self.bytes = 0
