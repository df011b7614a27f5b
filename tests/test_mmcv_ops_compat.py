import importlib.util
import sys

import numpy as np
import pytest
import torch

import models  # noqa: F401  (installs the stand-in before mmseg is imported)
from models import mmcv_ops_compat


def bilinear_reference(image: np.ndarray, x: float, y: float) -> np.ndarray:
    """Sample (C, H, W) at relative (x, y) with half-pixel centres and zero padding."""
    _, height, width = image.shape
    px, py = x * width - 0.5, y * height - 0.5
    x0, y0 = int(np.floor(px)), int(np.floor(py))
    out = np.zeros(image.shape[0])
    for yi, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
        for xi, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
            if 0 <= xi < width and 0 <= yi < height:
                out += wx * wy * image[:, yi, xi]
    return out


def test_point_sample_matches_independent_bilinear_computation():
    torch.manual_seed(0)
    features = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    # includes points on the border and outside the pixel centres
    points = torch.rand(2, 11, 2, dtype=torch.float64)
    points[0, 0] = torch.tensor([0.0, 0.0])
    points[1, 1] = torch.tensor([1.0, 0.37])
    sampled = mmcv_ops_compat.point_sample(features, points)
    assert sampled.shape == (2, 3, 11)
    for n in range(2):
        for p in range(11):
            x, y = points[n, p].tolist()
            expected = bilinear_reference(features[n].numpy(), x, y)
            np.testing.assert_allclose(sampled[n, :, p].numpy(), expected, atol=1e-12)


def test_point_sample_grid_form_keeps_grid_shape():
    features = torch.arange(16.0).reshape(1, 1, 4, 4)
    centres = torch.tensor([[[[0.125, 0.125], [0.875, 0.875]]]])  # exact pixel centres
    sampled = mmcv_ops_compat.point_sample(features, centres)
    assert sampled.shape == (1, 1, 1, 2)
    assert sampled.flatten().tolist() == [0.0, 15.0]


def test_mmseg_imports_through_the_stand_in():
    import mmcv.ops
    from mmseg.models.utils import point_sample as mmseg_point_sample  # noqa: F401

    assert getattr(mmcv.ops, "IS_MMCV_OPS_SHIM", False)
    assert mmcv.ops.point_sample is mmcv_ops_compat.point_sample


def test_compiled_op_fails_with_a_message_naming_it():
    import mmcv.ops

    with pytest.raises(RuntimeError, match=r"mmcv\.ops\.sigmoid_focal_loss needs mmcv's compiled"):
        mmcv.ops.sigmoid_focal_loss(torch.zeros(1), torch.zeros(1))


def test_dunder_names_are_not_faked():
    import mmcv.ops

    with pytest.raises(AttributeError):
        mmcv.ops.__path__  # noqa: B018


def test_steps_aside_when_real_mmcv_ops_exist(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args):
        if name == "mmcv._ext":
            return importlib.machinery.ModuleSpec("mmcv._ext", loader=None)
        return real_find_spec(name, *args)

    shim = sys.modules.pop("mmcv.ops")
    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    try:
        assert mmcv_ops_compat.install() is False
        assert "mmcv.ops" not in sys.modules
    finally:
        sys.modules["mmcv.ops"] = shim
