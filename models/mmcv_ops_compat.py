"""A stand-in for the `mmcv.ops` module, for environments that only have mmcv-lite.

Why it exists: mmsegmentation 1.2.2 imports `mmcv.ops` unconditionally (for
`point_sample` in a few heads and the focal loss), but mmcv's compiled ops no
longer build against torch >= 2.4 and mmseg refuses mmcv >= 2.2. mmcv-lite gives
everything else mmcv provides. None of the models here run a compiled op, so this
module offers the one op that is plain torch (`point_sample`) and makes every
other name an object that fails with a clear message when used. When a real
mmcv with its compiled extension is importable, `install()` steps aside.
"""

from __future__ import annotations

import importlib.util
import sys
import types
import warnings

import torch
import torch.nn.functional as F

SHIM_MODULE_NAME = "mmcv.ops"


def point_sample(
    input: torch.Tensor, points: torch.Tensor, align_corners: bool = False, **kwargs
) -> torch.Tensor:
    """Bilinearly sample `input` (N, C, H, W) at `points` given in [0, 1] image coordinates.

    `points` is (N, P, 2) or (N, Hg, Wg, 2), (x, y) order; returns (N, C, P) or
    (N, C, Hg, Wg), the same contract as mmcv's op.
    """
    flat = points.dim() == 3
    grid = points.unsqueeze(2) if flat else points
    # grid_sample expects [-1, 1]; the points are in [0, 1].
    output = F.grid_sample(input, 2.0 * grid - 1.0, align_corners=align_corners, **kwargs)
    return output.squeeze(3) if flat else output


class UnavailableOp:
    """Placeholder for a compiled mmcv op: importing it works, using it explains why it can't."""

    def __init__(self, name: str) -> None:
        self.op_name = name

    def _fail(self, *args, **kwargs):
        raise RuntimeError(
            f"mmcv.ops.{self.op_name} needs mmcv's compiled extension (mmcv._ext), which "
            "does not build against torch >= 2.4; this environment has mmcv-lite, where only "
            "mmcv.ops.point_sample is available. Use a model without this op, or install a "
            "full mmcv built for your torch."
        )

    __call__ = _fail

    def __repr__(self) -> str:
        return f"<unavailable compiled op mmcv.ops.{self.op_name}>"


def _module_getattr(name: str):
    # Dunder lookups (__path__, __file__, ...) must fail normally, or importlib and
    # pickle would take the placeholder for module metadata.
    if name.startswith("__"):
        raise AttributeError(name)
    return UnavailableOp(name)


def real_mmcv_ops_available() -> bool:
    """True when mmcv's compiled extension is importable (full mmcv), as mmengine checks it."""
    try:
        return importlib.util.find_spec("mmcv._ext") is not None
    except (ImportError, ValueError):
        return False


def install() -> bool:
    """Register the stand-in as `mmcv.ops` unless real ops exist; returns True if installed."""
    current = sys.modules.get(SHIM_MODULE_NAME)
    if getattr(current, "IS_MMCV_OPS_SHIM", False):
        return True
    if real_mmcv_ops_available():
        return False
    import mmcv

    shim = types.ModuleType(SHIM_MODULE_NAME, __doc__)
    shim.IS_MMCV_OPS_SHIM = True
    shim.point_sample = point_sample
    shim.__getattr__ = _module_getattr
    # A failed earlier `import mmcv.ops` may have left half-imported submodules behind.
    for name in [n for n in sys.modules if n.startswith(SHIM_MODULE_NAME + ".")]:
        del sys.modules[name]
    sys.modules[SHIM_MODULE_NAME] = shim
    mmcv.ops = shim
    # mmcv's transformer bricks try this compiled attention at import and warn on
    # every run; it is expected here and no model of this project uses it.
    warnings.filterwarnings("ignore", message="Fail to import ``MultiScaleDeformableAttention``")
    return True
