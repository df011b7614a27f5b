# DINOv2-B/14 + SegFormer head, the guide's model on our fast backbone.
# num_classes is set by each experiment config from its prepared dataset.
norm_cfg = dict(type="SyncBN", requires_grad=True)  # train.py turns it into BN off distributed runs
data_preprocessor = dict(
    type="SegDataPreProcessor",
    mean=[123.675, 116.28, 103.53],  # ImageNet statistics, as DINOv2 was trained with
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=(1280, 1280),
)
model = dict(
    type="PatchAlignedEncoderDecoder",
    patch_size=14,
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type="DINOv2",
        arch="vitb14",
        out_indices=[2, 5, 8, 11],
        frozen_stages=-1,
        drop_path_rate=0.1,
        use_checkpoint=False,
        # DINOv2's own weights, fetched once into huggingface_hub's cache (offline: a
        # local .pth / .safetensors file or Hugging Face folder). None trains from
        # random weights and train.py warns; only the tiny demo does that on purpose.
        pretrained="facebook/dinov2-base",
    ),
    decode_head=dict(
        type="SegformerHead",
        in_channels=[768, 768, 768, 768],
        in_index=[0, 1, 2, 3],
        channels=256,
        dropout_ratio=0.1,
        num_classes=17,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0, avg_non_ignore=True
        ),
    ),
    train_cfg=dict(),
    # slide_batch: the four windows of a 1920 px quadrat in one forward pass
    test_cfg=dict(mode="slide", crop_size=(1280, 1280), stride=(853, 853), slide_batch=4),
)
