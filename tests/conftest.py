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
