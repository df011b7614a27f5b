"""The recipe fine-tunes DINOv2: its weights are named by default, found in the Hugging Face
cache offline, refused with advice when absent, and random weights come with a warning."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from models.safe_checkpoint import safe_load

ROOT = Path(__file__).resolve().parents[1]
RECIPES = [
    "configs/dinov2_vitb14_coralsegv4_ms_config_segformer.py",
    "configs/dinov2_main_families.py",
    "configs/dinov2_finegrained.py",
]
TINY_HUB_ID = "coral-tests/dinov2-tiny"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize("config", RECIPES)
def test_recipe_configs_start_from_dinov2_weights(config):
    cfg = Config.fromfile(str(ROOT / config))
    assert cfg.model.backbone.pretrained == "facebook/dinov2-base"


def test_the_tiny_demo_says_random_weights_on_purpose():
    text = (ROOT / "configs/reef_demo_tiny.py").read_text()
    assert "pretrained=None" in text
    assert (
        Config.fromfile(str(ROOT / "configs/reef_demo_tiny.py")).model.backbone.pretrained is None
    )


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """A Hugging Face hub cache holding a tiny DINOv2 (the tiny config's size) under a hub id,
    laid out as huggingface_hub writes it (refs/main -> snapshots/<commit>/)."""
    from transformers import Dinov2Config, Dinov2Model

    cache = tmp_path_factory.mktemp("hf_cache")
    repo = cache / ("models--" + TINY_HUB_ID.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    torch.manual_seed(7)
    model = Dinov2Model(
        Dinov2Config(hidden_size=96, num_hidden_layers=4, num_attention_heads=3,
                     intermediate_size=384, image_size=518, patch_size=14)
    )  # fmt: skip
    model.save_pretrained(snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return dict(cache=cache, cls_token=model.embeddings.cls_token.detach().clone())


def _train(prepared, tmp_path, env: dict, *options: str) -> subprocess.CompletedProcess:
    work = tmp_path / "work"
    args = [sys.executable, "train.py", prepared["configs"]["fine"], "--work-dir", str(work),
            "--cfg-options", "train_cfg.max_epochs=1", *options]  # fmt: skip
    environment = {**os.environ, "PYTHONWARNINGS": "ignore", "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=environment)


def _log_text(work: Path) -> str:
    return "\n".join(p.read_text() for p in work.rglob("*.log"))


def test_offline_training_uses_the_cached_hub_weights(prepared, hub_cache, tmp_path):
    done = _train(prepared, tmp_path, {"HF_HUB_CACHE": str(hub_cache["cache"])},
                  f"model.backbone.pretrained={TINY_HUB_ID}")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    work = tmp_path / "work"
    log = _log_text(work)
    assert f"Backbone starts from the DINOv2 weights {TINY_HUB_ID}" in log
    assert "RANDOM weights" not in log
    # the first epoch's checkpoint: the class token moved little from DINOv2's (lr 1e-3, 2 steps)
    state = safe_load(next(work.glob("epoch_1.pth")))["state_dict"]
    trained = state["backbone.vit.cls_token"]
    assert torch.allclose(trained, hub_cache["cls_token"], atol=0.05)
    assert not torch.allclose(trained, torch.zeros_like(trained), atol=1e-3)


def test_offline_without_a_cached_copy_stops_before_any_work(prepared, tmp_path):
    empty = tmp_path / "empty_cache"
    empty.mkdir()
    done = _train(prepared, tmp_path, {"HF_HUB_CACHE": str(empty)},
                  "model.backbone.pretrained=coral-tests/not-cached")  # fmt: skip
    assert done.returncode == 1
    message = done.stderr
    assert "Could not get the DINOv2 weights 'coral-tests/not-cached'" in message
    assert "--cfg-options model.backbone.pretrained=/path/to/dinov2-weights" in message
    assert "Traceback" not in message
    assert not (tmp_path / "work").exists()  # no run folder, no log, no checkpoint


def test_random_weights_train_with_a_warning_in_the_log(prepared, tmp_path):
    done = _train(prepared, tmp_path, {})
    assert done.returncode == 0, done.stderr[-3000:]
    warning = [
        line for line in _log_text(tmp_path / "work").splitlines() if "RANDOM weights" in line
    ]
    assert warning and "WARNING" in warning[0]
    assert "model.backbone.pretrained is None" in warning[0]


def test_load_from_skips_the_pretrained_download(prepared, tmp_path):
    first = _train(prepared, tmp_path, {})
    assert first.returncode == 0, first.stderr[-3000:]
    checkpoint = next((tmp_path / "work").glob("epoch_1.pth"))
    second = tmp_path / "second"
    second.mkdir()
    # an unreachable hub id: not needed, the checkpoint holds the backbone
    done = _train(prepared, second, {"HF_HUB_CACHE": str(second)},
                  "model.backbone.pretrained=coral-tests/not-cached",
                  "--load-from", str(checkpoint))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Backbone weights come from {checkpoint}" in _log_text(second / "work")


def test_resume_ignores_a_changed_pretrained_source():
    from engine.runner import model_config_differences

    saved = Config(
        dict(model=dict(backbone=dict(type="DINOv2", pretrained="facebook/dinov2-base")))
    )
    now = Config(dict(model=dict(backbone=dict(type="DINOv2", pretrained=None))))
    assert model_config_differences(saved.pretty_text, now) == []
    wider = Config(dict(model=dict(backbone=dict(type="DINOv2", pretrained=None, arch="vitl14"))))
    assert model_config_differences(saved.pretty_text, wider) == [
        "model.backbone.arch: None -> 'vitl14'"
    ]
