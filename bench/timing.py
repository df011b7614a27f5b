"""One way to time a call in every benchmark: warm-up, then repeats, CUDA events on GPUs."""

from __future__ import annotations

import contextlib
import faulthandler
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

# gpu_session.sh stops a benchmark past its limit with SIGTERM: print where it was
# (to the process's own stderr; under pytest's capture sys.stderr has no file)
with contextlib.suppress(AttributeError, OSError, ValueError):
    faulthandler.register(signal.SIGTERM, file=sys.__stderr__, all_threads=True, chain=True)


def time_call(
    fn: Callable[[], Any], device: str, warmup: int, repeats: int
) -> tuple[Any, list[float]]:
    """(the last call's result, seconds of each repeat)."""
    for _ in range(warmup):
        fn()
    result, seconds = None, []
    for _ in range(repeats):
        if device.startswith("cuda"):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            result = fn()
            end.record()
            torch.cuda.synchronize()
            seconds.append(start.elapsed_time(end) / 1000)
        else:
            began = time.perf_counter()
            result = fn()
            seconds.append(time.perf_counter() - began)
    return result, seconds
