"""Every config builds its model and runs a forward pass; the patch-aligned segmentor and
the layer-decay optimizer do what they promise."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import dataset.mmseg_dataset  # noqa: F401  (registers CoralDataset)
from models.layer_decay import layer_id

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.py") if "_base_" not in p.parts)


def build(cfg):
    from mmseg.registry import MODELS

    init_default_scope("mmseg")
    return MODELS.build(cfg.model)


def test_the_guides_configs_exist():
    names = {p.relative_to(ROOT / "configs").as_posix() for p in CONFIGS}
    assert {
        "dinov2_vitb14_coralsegv4_ms_config_segformer.py", "dinov2_main_families.py",
        "dinov2_finegrained.py", "reef_demo_tiny.py", "baselines/guide_vit_segformer.py",
    } <= names  # fmt: skip


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_builds_and_runs_forward(path):
    cfg = Config.fromfile(str(path))
    torch.manual_seed(0)
    model = build(cfg).eval()
    image = torch.randint(0, 256, (3, 75, 101), dtype=torch.uint8)
    from mmseg.structures import SegDataSample

    sample = SegDataSample(metainfo=dict(img_shape=(75, 101), ori_shape=(75, 101)))
    with torch.no_grad():
        batch = model.data_preprocessor(dict(inputs=[image], data_samples=[sample]), False)
        prediction = model(**batch, mode="predict")[0]
    num_classes = cfg.model.decode_head.num_classes
    assert prediction.seg_logits.data.shape == (num_classes, 75, 101)
    assert num_classes == len(cfg.dataset_info["classes"])


def test_class_count_comes_from_the_taxonomy_or_prepared_dataset():
    fine = Config.fromfile(str(ROOT / "configs/dinov2_vitb14_coralsegv4_ms_config_segformer.py"))
    coarse = Config.fromfile(str(ROOT / "configs/dinov2_main_families.py"))
    assert fine.model.decode_head.num_classes == 17
    assert coarse.model.decode_head.num_classes == 7
    assert coarse.train_dataloader.dataset.data_root.endswith("criobe_finegrained_coarse")
    assert coarse.dataset_info["classes"][1] == "Acroporidae"


def test_patch_aligned_segmentor_crops_logits_back_instead_of_stretching():
    cfg = Config.fromfile(str(ROOT / "configs/reef_demo_tiny.py"))
    model = build(cfg).eval()
    odd = torch.randn(1, 3, 75, 101)
    padded = torch.nn.functional.pad(odd, (0, 112 - 101, 0, 84 - 75))
    meta = dict(img_shape=(75, 101), ori_shape=(75, 101))
    with torch.no_grad():
        logits = model.encode_decode(odd, [meta])
        reference = model.encode_decode(padded, [dict(meta, img_shape=(84, 112))])
    assert logits.shape[-2:] == (75, 101)
    torch.testing.assert_close(logits, reference[..., :75, :101])


def test_patch_aligned_segmentor_trains_on_crops_that_are_not_whole_patches():
    """The recipe's 1280 px crops are not a multiple of 14: the loss pads the labels too."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    cfg = Config.fromfile(str(ROOT / "configs/reef_demo_tiny.py"))
    torch.manual_seed(0)
    model = build(cfg).eval()  # no dropout: the two losses below must agree
    inputs = torch.randn(2, 3, 50, 60)  # pads to 56 x 70
    labels = torch.randint(0, cfg.model.decode_head.num_classes, (2, 1, 50, 60))
    samples = []
    for label in labels:
        sample = SegDataSample(metainfo=dict(img_shape=(50, 60), ori_shape=(50, 60)))
        sample.gt_sem_seg = PixelData(data=label)
        samples.append(sample)
    losses = model.loss(inputs, samples)
    assert torch.isfinite(losses["decode.loss_ce"])
    padded = samples[0].gt_sem_seg.data
    assert padded.shape == (1, 56, 70)
    assert (padded[:, 50:] == 255).all() and (padded[:, :, 60:] == 255).all()
    assert torch.equal(padded[:, :50, :60], labels[0])
    # the padding changes nothing the loss sees: same loss as the aligned input
    aligned = torch.nn.functional.pad(inputs, (0, 10, 0, 6))
    again = [SegDataSample(metainfo=dict(img_shape=(56, 70))) for _ in range(2)]
    for sample, original in zip(again, samples, strict=True):
        sample.gt_sem_seg = PixelData(data=original.gt_sem_seg.data.clone())
    aligned_loss = model.loss(aligned, again)["decode.loss_ce"]
    torch.testing.assert_close(aligned_loss, losses["decode.loss_ce"])


@pytest.mark.parametrize("slide_batch", [1, 3, 8])
def test_batched_slide_inference_equals_mmseg_slide_inference(slide_batch):
    from mmseg.models.segmentors import EncoderDecoder

    cfg = Config.fromfile(str(ROOT / "configs/reef_demo_tiny.py"))
    cfg.model.test_cfg = dict(mode="slide", crop_size=(56, 70), stride=(40, 45))
    model = build(cfg).eval()
    images = torch.randn(2, 3, 100, 130)  # 3 x 3 windows, two images: batched across both
    meta = dict(img_shape=(100, 130), ori_shape=(100, 130), pad_shape=(100, 130))
    with torch.no_grad():
        reference = EncoderDecoder.slide_inference(model, images, [dict(meta), dict(meta)])
        model.test_cfg.slide_batch = slide_batch
        logits = model.slide_inference(images, [dict(meta), dict(meta)])
    assert len(model.slide_windows(100, 130)) == 9
    torch.testing.assert_close(logits, reference, rtol=1e-5, atol=1e-5)


def test_layer_decay_scales_learning_rates_by_depth():
    from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS

    cfg = Config.fromfile(str(ROOT / "configs/reef_demo_tiny.py"))
    model = build(cfg)
    constructor = OPTIM_WRAPPER_CONSTRUCTORS.build(
        dict(
            type="LayerDecayOptimWrapperConstructor",
            optim_wrapper_cfg=dict(
                type="OptimWrapper", optimizer=dict(type="AdamW", lr=1.0, weight_decay=0.05)
            ),
            paramwise_cfg=dict(layer_decay_rate=0.5),
        )
    )
    groups = {g["param_name"]: g for g in constructor(model).optimizer.param_groups}
    assert groups["backbone.vit.blocks.3.attn.qkv.weight"]["lr"] == pytest.approx(0.5)
    assert groups["backbone.vit.blocks.0.mlp.fc1.weight"]["lr"] == pytest.approx(0.5**4)
    assert groups["backbone.vit.patch_embed.proj.weight"]["lr"] == pytest.approx(0.5**5)
    assert groups["decode_head.conv_seg.weight"]["lr"] == pytest.approx(1.0)
    assert groups["backbone.vit.blocks.0.norm1.weight"]["weight_decay"] == 0.0
    assert groups["backbone.vit.cls_token"]["weight_decay"] == 0.0
    assert groups["backbone.vit.blocks.0.attn.qkv.weight"]["weight_decay"] == 0.05
    assert layer_id("backbone.vit.norm.weight", 4) == 5


def test_the_orthomosaic_config_keeps_the_maps_resolution():
    """Crops are scaled relative to themselves in training (the prepared crop size is the
    RandomResize box) and not at all at test, as tiled inference reads the map."""
    from inferencer import _test_scale

    cfg = Config.fromfile(str(ROOT / "configs/dinov2_orthomosaic.py"))
    assert _test_scale(cfg) is None
    resize = next(s for s in cfg.train_pipeline if s["type"] == "RandomResize")
    assert tuple(resize["scale"]) == cfg.prepared_crop and resize["ratio_range"] == (0.5, 2.0)
    assert cfg.test_dataloader.dataset.pipeline == cfg.test_pipeline
    assert cfg.model.test_cfg.crop_size == cfg.crop_size == (1024, 1024)
