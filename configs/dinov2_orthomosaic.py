# The recipe's model on orthomosaic crops (prepare_data.py on a TagLab project or an
# orthomosaic with GIS polygons: 1280 px crops at the map's resolution, edge crops padded
# with ignore). The quadrat recipe resizes every image into a 1920 px box, which would
# magnify these crops 1.5x; here scales are relative to the map's own resolution
# (0.5-2x in training, none at test), as tiled inference reads the map (1024 px tiles).
#   python prepare_data.py survey.json --crop-size 1280
#   python train.py configs/dinov2_orthomosaic.py
_base_ = [
    "./_base_/models/dinov2_segformer.py",
    "./_base_/datasets/coral.py",
    "./_base_/schedules/schedule_160e.py",
    "./_base_/default_runtime.py",
]
from dataset.info import dataset_class_info

taxonomy = "fine"
data_root = "data/prepared_for_training/survey"  # prepare_data.py's folder: the project's name
dataset_info = dataset_class_info(data_root, taxonomy)
prepared_crop = (1280, 1280)  # prepare_data.py --crop-size
crop_size = (1024, 1024)  # what the model sees in training; tiled inference's default tile

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(pretrained="facebook/dinov2-base"),
    decode_head=dict(num_classes=dataset_info["num_classes"]),
    test_cfg=dict(mode="slide", crop_size=crop_size, stride=(683, 683), slide_batch=4),
)
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations"),
    dict(type="RandomResize", scale=prepared_crop, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type="CountingRandomCrop", crop_size=crop_size, cat_max_ratio=0.75),
    dict(type="RandomFlip", prob=0.5, direction="horizontal"),
    dict(type="RandomFlip", prob=0.5, direction="vertical"),
    dict(type="PhotoMetricDistortion"),
    dict(type="PackSegInputs"),
]
# No Resize: crops are evaluated, and maps predicted, at the resolution they were prepared at.
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations"),
    dict(type="PackSegInputs"),
]
train_dataloader = dict(dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(data_root=data_root, pipeline=test_pipeline))
