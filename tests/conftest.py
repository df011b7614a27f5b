"""Shared fixtures. Tests never touch the user's FiftyOne database or .env file."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# Set before anything imports FiftyOne (it reads these once, at import).
_FIFTYONE_DIR = tempfile.mkdtemp(prefix="coral-tests-fiftyone-")
# Registered before FiftyOne registers its own exit handler that stops mongod, so
# (exit handlers run last-in first-out) the folder goes after mongod has stopped.
atexit.register(shutil.rmtree, _FIFTYONE_DIR, ignore_errors=True)
os.environ["FIFTYONE_DATABASE_DIR"] = _FIFTYONE_DIR
os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
os.environ["CORAL_ENV_FILE"] = os.devnull
for _name in [n for n in os.environ if n.startswith("CORAL_") and n != "CORAL_ENV_FILE"]:
    del os.environ[_name]
# Compiled OpenVINO encoders (models/sam_openvino.py) go to a throw-away folder shared by the
# session's tests and the scripts they run, not to the user's ~/.cache.
_CACHE_DIR = tempfile.mkdtemp(prefix="coral-tests-cache-")
atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)
os.environ["CORAL_CACHE_DIR"] = _CACHE_DIR
# SAM's encoder in PyTorch unless a test asks for OpenVINO (tests/test_sam_cpu.py,
# bench/function_cpu_bench.py's smoke run): a ViT-B export per test session costs ~30 s.
os.environ["CORAL_SAM_ENCODER_RUNTIME"] = "torch"

import pytest  # noqa: E402
import torch  # noqa: E402

# The mmcv.ops stand-in must be in place before any test imports mmseg.
import models  # noqa: E402, F401


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none is available on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def fiftyone():
    """FiftyOne on a throw-away database (started once per test session)."""
    import fiftyone as fo

    return fo


@pytest.fixture(scope="session")
def random_semantic_checkpoint(tmp_path_factory):
    """A randomly initialised checkpoint of configs/reef_demo_tiny.py, saved as train.py saves
    one (state_dict + dataset_meta)."""
    from pathlib import Path

    from models.random_checkpoint import write_random_semantic_checkpoint

    config = Path(__file__).resolve().parents[1] / "configs/reef_demo_tiny.py"
    return write_random_semantic_checkpoint(
        config, tmp_path_factory.mktemp("semantic_ckpt") / "random.pth"
    )


# Deterministic training: no random augmentation, no dropout, fixed seed, shuffling
# seeded per epoch. Then an interrupted + resumed run must end where an
# uninterrupted one does.
TEST_CONFIG = """
_base_ = ["{root}/configs/reef_demo_tiny.py"]
data_root = "{data_root}"
fixed = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations"),
    dict(type="Resize", scale=(112, 112), keep_ratio=True),
    dict(type="PackSegInputs"),
]
model = dict(data_preprocessor=dict(size=(112, 112)), decode_head=dict(dropout_ratio=0.0,
             num_classes={num_classes}))
train_dataloader = dict(num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=fixed))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline=fixed))
test_dataloader = dict(num_workers=0, persistent_workers=False,
                       dataset=dict(data_root=data_root, pipeline=fixed))
train_cfg = dict(max_epochs=4, val_interval=2)
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=-1), logger=dict(interval=1))
randomness = dict(seed=0, deterministic=False)
"""


@pytest.fixture(scope="module")
def prepared(fiftyone, tmp_path_factory):
    """The reef example at 112 px (train 8, val 2, test 2), prepared at both taxonomy levels,
    with a deterministic training config for each (TEST_CONFIG)."""
    from pathlib import Path

    from dataset.prepare import prepare
    from dataset.reef_demo import create_reef_demo
    from settings import Settings

    repo = Path(__file__).resolve().parents[1]
    tmp = tmp_path_factory.mktemp("train")
    create_reef_demo("train_test_reef_fo", num_samples=12, image_size=112, image_dir=tmp / "images")
    fine = prepare(
        "train_test_reef_fo", Settings(data_root=tmp / "prepared", image_size=112, num_workers=1)
    )
    coarse = prepare(
        "train_test_reef_fo",
        Settings(data_root=tmp / "prepared", image_size=112, num_workers=1, taxonomy="coarse"),
    )
    configs = {}
    for name, root, classes in (("fine", fine, 17), ("coarse", coarse, 7)):
        path = tmp / f"test_{name}.py"
        path.write_text(TEST_CONFIG.format(root=repo, data_root=root, num_classes=classes))
        configs[name] = str(path)
    return dict(tmp=tmp, fine=fine, coarse=coarse, configs=configs)
