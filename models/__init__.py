"""Model code registered in MMSegmentation's registries.

Importing this package first installs the `mmcv.ops` stand-in (see
mmcv_ops_compat), so it must be imported before mmseg's models are; configs pull
it in with `custom_imports = dict(imports=['models', ...])`.
"""

from .mmcv_ops_compat import install as _install_mmcv_ops

MMCV_OPS_SHIM_INSTALLED = _install_mmcv_ops()

from .dinov2 import DINOv2  # noqa: E402
from .layer_decay import LayerDecayOptimWrapperConstructor  # noqa: E402
from .segmentor import PatchAlignedEncoderDecoder  # noqa: E402

__all__ = [
    "DINOv2",
    "LayerDecayOptimWrapperConstructor",
    "MMCV_OPS_SHIM_INSTALLED",
    "PatchAlignedEncoderDecoder",
]
