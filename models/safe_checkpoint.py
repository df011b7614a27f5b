"""Checkpoints loaded without running pickled code, on every torch version.

mmengine 0.10.7 calls `torch.load` without `weights_only`: on torch < 2.6 that
unpickles anything a file holds (arbitrary code), and on torch >= 2.6 resuming
fails because a checkpoint also holds mmengine's logging buffers and numpy
values. Here every mmengine checkpoint load goes through `torch.load(...,
weights_only=True)` with an allow-list of the few plain types a training
checkpoint of this project holds (`register()` replaces mmengine's local-file
loader). Anything else is refused with the name of the offending type.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader
from torch import nn

log = logging.getLogger(__name__)


def _numpy_globals() -> list:
    # numpy arrays and scalars in mmengine's message hub pickle through these.
    try:
        from numpy._core.multiarray import _reconstruct, scalar  # numpy >= 2
    except ImportError:
        from numpy.core.multiarray import _reconstruct, scalar

    dtypes = [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool", "uint8")]
    return [_reconstruct, scalar, np.ndarray, np.dtype, *dtypes]


# HistoryBuffer registers these in its constructor, so the class-level dict may still be empty.
_STATISTICS = {"min", "max", "current", "mean"}


def _history_buffer_method(owner: Any, name: str) -> Any:
    """Stands in for builtins.getattr while unpickling, for one use only.

    mmengine pickles each HistoryBuffer's statistics methods as
    getattr(HistoryBuffer, 'mean'); a general getattr would let a file reach any
    attribute of any allowed object, so nothing else is looked up.
    """
    if owner is HistoryBuffer and name in _STATISTICS | set(HistoryBuffer._statistics_methods):
        return getattr(owner, name)
    raise UnsafeCheckpointError(f"checkpoint asks for {owner!r}.{name}, which is not allowed")


SAFE_GLOBALS = [
    HistoryBuffer,
    *_numpy_globals(),
    (_history_buffer_method, "builtins.getattr"),
    (_history_buffer_method, "__builtin__.getattr"),
]


class UnsafeCheckpointError(RuntimeError):
    """The file needs types outside the allow-list to unpickle."""


def safe_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """torch.load with weights_only=True and the allow-list above."""
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        if "Weights only load failed" not in str(exc):
            raise
        raise UnsafeCheckpointError(
            f"{path} holds objects outside the types a checkpoint of this project needs, and "
            "loading it would run code stored in the file. It was not loaded. Only load it if "
            f"you trust where it came from and know what it holds. Details: {exc}"
        ) from None


def register() -> None:
    """Route mmengine's loading of local checkpoint files through safe_load."""
    CheckpointLoader.register_scheme(prefixes="", force=True)(safe_load)


def load_weights(model: nn.Module, path: str | Path, partial: bool, logger=log) -> dict:
    """Load a checkpoint's weights into `model`.

    partial=True (fine-tuning, --load-from): tensors whose shape differs (a head
    with another class count) are left at their fresh initialisation, and the
    message says so. partial=False (evaluation): any difference is an error.
    """
    checkpoint = safe_load(path)
    state = checkpoint.get("state_dict", checkpoint)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    reshaped = {k: (tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
                if k in own and v.shape != own[k].shape}  # fmt: skip
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if not partial and (reshaped or missing or unexpected):
        details = [f"{k}: checkpoint {a} vs model {b}" for k, (a, b) in reshaped.items()]
        raise ValueError(
            f"{path} does not fit this config's model: "
            + "; ".join(details + [f"missing {missing[:10]}", f"unexpected {unexpected[:10]}"])
            + ". Is it the checkpoint of this config (same classes and backbone)?"
        )
    if reshaped:
        shapes = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in reshaped.items())
        logger.warning(
            "Loaded weights from %s; re-initialised %d tensor(s) whose shape differs "
            "(e.g. a decode head with another class count): %s",
            path, len(reshaped), shapes,
        )  # fmt: skip
    if missing or unexpected:
        logger.warning("Loading %s: missing keys %s; unexpected keys %s", path, missing, unexpected)
    model.load_state_dict({k: v for k, v in state.items() if k not in reshaped}, strict=False)
    return checkpoint
