# The built-in example: a tiny DINOv2-shaped model (4 blocks, width 96, random
# init) that learns the synthetic reef dataset on a CPU in a few minutes.
#   python -m dataset.reef_demo && python prepare_data.py reef_demo_fo --image-size 256
#   python train.py configs/reef_demo_tiny.py
_base_ = [
    "./_base_/models/dinov2_segformer.py",
    "./_base_/datasets/coral.py",
    "./_base_/schedules/schedule_160e.py",
    "./_base_/default_runtime.py",
]
from dataset.info import dataset_class_info

taxonomy = "fine"
data_root = "data/prepared_for_training/reef_demo"
dataset_info = dataset_class_info(data_root, taxonomy)
image_scale = (256, 256)
crop_size = (224, 224)
max_epochs = 150

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(arch=dict(_delete_=True, embed_dim=96, depth=4, num_heads=3),
                  out_indices=[0, 1, 2, 3],
                  drop_path_rate=0.0,
                  pretrained=None),  # on purpose: no DINOv2 weights exist at this size
    decode_head=dict(in_channels=[96] * 4, channels=64, num_classes=dataset_info["num_classes"],
                     norm_cfg=dict(type="BN", requires_grad=True)),
    test_cfg=dict(mode="whole"),
)  # fmt: skip
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations"),
    dict(type="RandomResize", scale=image_scale, ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type="RandomCrop", crop_size=crop_size),
    dict(type="RandomFlip", prob=0.5, direction="horizontal"),
    dict(type="RandomFlip", prob=0.5, direction="vertical"),
    dict(type="PhotoMetricDistortion"),
    dict(type="PackSegInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=image_scale, keep_ratio=True),
    dict(type="LoadAnnotations"),
    dict(type="PackSegInputs"),
]
train_dataloader = dict(
    batch_size=4, num_workers=2,
    dataset=dict(data_root=data_root, pipeline=train_pipeline),
)  # fmt: skip
val_dataloader = dict(num_workers=1, dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = dict(num_workers=1, dataset=dict(data_root=data_root, pipeline=test_pipeline))
optim_wrapper = dict(optimizer=dict(lr=1e-3), accumulative_counts=1)
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-2, by_epoch=True, begin=0, end=2,
         convert_to_iter_based=True),
    dict(type="PolyLR", eta_min=1e-5, power=0.9, by_epoch=True, begin=2, end=max_epochs,
         convert_to_iter_based=True),
]  # fmt: skip
train_cfg = dict(max_epochs=max_epochs, val_interval=25)
default_hooks = dict(
    logger=dict(interval=4),
    checkpoint=dict(interval=25, max_keep_ckpts=1),
)
env_cfg = dict(cudnn_benchmark=False)
randomness = dict(seed=0)  # the demo gives the same numbers on every run
