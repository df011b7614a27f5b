# The guide's own model, as its config wrote it: mmseg's VisionTransformer
# (patch 14, img_size 1920, no fused attention) + the same SegFormer head, in
# mmseg's plain EncoderDecoder. Kept so bench/ can compare it side by side with
# our DINOv2 backbone; not a recipe to train with.
_base_ = ["../dinov2_vitb14_coralsegv4_ms_config_segformer.py"]

model = dict(
    type="EncoderDecoder",
    _delete_=True,
    data_preprocessor={{_base_.data_preprocessor}},
    backbone=dict(
        type="VisionTransformer",
        img_size=(1920, 1920),
        patch_size=14,
        embed_dims=768,
        num_layers=12,
        num_heads=12,
        mlp_ratio=4,
        out_indices=[2, 5, 8, 11],
        qkv_bias=True,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.1,
        with_cls_token=True,
        # The guide also passed frozen_stages=-1, which mmseg 1.2.2's VisionTransformer
        # does not accept (the guide's config fails to build); -1 is "train all" anyway.
        interpolate_mode="bicubic",
        # The guide's init_cfg named 'facebook/dinov2-base', which mmseg's
        # VisionTransformer cannot load (different key names); left out.
    ),
    decode_head={{_base_.model.decode_head}},
    train_cfg=dict(),
    test_cfg=dict(mode="slide", crop_size=(1280, 1280), stride=(853, 853)),
)
