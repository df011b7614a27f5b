"""mmseg's EncoderDecoder with a patch-14 ViT and SegformerHead trains on CPU in this stack."""

import torch

import models  # noqa: F401


def test_vit_segformer_forward_and_backward_on_cpu():
    from mmengine.config import ConfigDict
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmseg.utils import register_all_modules

    register_all_modules()
    torch.manual_seed(0)
    num_classes = 5
    model = MODELS.build(
        ConfigDict(
            type="EncoderDecoder",
            data_preprocessor=dict(
                type="SegDataPreProcessor",
                mean=[123.675, 116.28, 103.53],
                std=[58.395, 57.12, 57.375],
                bgr_to_rgb=True,
                size=(56, 56),
                pad_val=0,
                seg_pad_val=255,
            ),
            backbone=dict(
                type="VisionTransformer",
                img_size=(56, 56),
                patch_size=14,
                embed_dims=32,
                num_layers=4,
                num_heads=2,
                out_indices=[0, 1, 2, 3],
                with_cls_token=True,
                interpolate_mode="bicubic",
            ),
            decode_head=dict(
                type="SegformerHead",
                in_channels=[32] * 4,
                in_index=[0, 1, 2, 3],
                channels=16,
                num_classes=num_classes,
                norm_cfg=dict(type="BN", requires_grad=True),
                loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
            ),
            test_cfg=dict(mode="whole"),
        )
    )
    images = [torch.randint(0, 256, (3, 56, 56), dtype=torch.uint8) for _ in range(2)]
    samples = []
    for _ in images:
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, 56, 56)))
        sample.set_metainfo(dict(img_shape=(56, 56), ori_shape=(56, 56), pad_shape=(56, 56)))
        samples.append(sample)
    batch = model.data_preprocessor(dict(inputs=images, data_samples=samples), training=True)
    losses = model(**batch, mode="loss")
    assert set(losses) >= {"decode.loss_ce", "decode.acc_seg"}
    loss = losses["decode.loss_ce"]
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    patch_grad = model.backbone.patch_embed.projection.weight.grad
    assert patch_grad is not None and patch_grad.abs().sum() > 0

    model.eval()
    with torch.no_grad():
        batch = model.data_preprocessor(dict(inputs=images, data_samples=samples), training=False)
        predictions = model(**batch, mode="predict")
    assert predictions[0].pred_sem_seg.data.shape == (1, 56, 56)
    assert int(predictions[0].pred_sem_seg.data.max()) < num_classes
