"""OpenVINO checks of tests/test_sam_cpu.py, each run in a process of its own there."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from models.coralscop import SAM_TINY, build_coralscop
from models.mask_generator import GeneratorSettings


def tiny_sam():
    """A tiny encoder; the mask decoder and category head have CoralSCoP's full size."""
    torch.manual_seed(0)
    model = build_coralscop(SAM_TINY)
    with torch.no_grad():  # random weights put the IoU predictions around 0: spread them
        model.mask_decoder.iou_prediction_head.layers[-1].bias.add_(0.5)
    return model


def encoder_matches_pytorch_and_is_cached(folder: str) -> None:
    from models.sam_openvino import compile_image_encoder

    cache = Path(folder)
    sam = tiny_sam()
    image = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        expected = sam.image_encoder(image)
    encoder = compile_image_encoder(sam.image_encoder, threads=1, cache_dir=cache)
    got = encoder(image)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() < 1e-4 * expected.abs().max()

    def model_files():
        return sorted((p.name, p.stat().st_mtime_ns) for p in cache.iterdir()
                      if p.suffix in (".bin", ".xml"))  # fmt: skip

    cached = model_files()
    assert [Path(name).suffix for name, _ in cached] == [".bin", ".xml"]
    assert not [p for p in cache.iterdir() if p.is_dir()], "no scratch folder left"
    again = compile_image_encoder(sam.image_encoder, threads=1, cache_dir=cache)
    assert torch.equal(again(image), got), "read back from the cache"
    assert model_files() == cached, "no second export"


def segmenter_gives_the_same_proposals(folder: str) -> None:
    from dataset.reef_demo import render_sample
    from inferencer import CoralSCoPSegmenter

    os.environ["CORAL_CACHE_DIR"] = folder
    image, _ = render_sample(4, 128)
    settings = GeneratorSettings(
        points_per_side=4, crop_n_layers=0, pred_iou_thresh=0.0, stability_score_thresh=0.0
    )
    runs = {}
    for runtime in ("torch", "openvino"):
        torch.manual_seed(0)
        segmenter = CoralSCoPSegmenter(None, "cpu", settings, SAM_TINY, encoder_runtime=runtime)
        assert segmenter.encoder_runtime == runtime
        runs[runtime] = segmenter.propose(image)
    assert len(runs["torch"]) == len(runs["openvino"]) > 0
    differing = (runs["torch"].masks != runs["openvino"].masks).sum().item()
    assert differing <= 1e-5 * runs["torch"].masks.numel()
