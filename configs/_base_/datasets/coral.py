# A folder written by prepare_data.py, read by CoralDataset (classes and palette
# come from the folder). Experiment configs set data_root on each dataloader.
dataset_type = "CoralDataset"
data_root = "data/prepared_for_training/criobe_finegrained"
image_scale = (1920, 1920)
crop_size = (1280, 1280)
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations"),
    dict(type="RandomResize", scale=image_scale, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type="CountingRandomCrop", crop_size=crop_size, cat_max_ratio=0.75),
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
img_ratios = [0.75, 1.0, 1.25]
tta_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(
        type="TestTimeAug",
        transforms=[
            [dict(type="Resize", scale_factor=r, keep_ratio=True) for r in img_ratios],
            [
                dict(type="RandomFlip", prob=0.0, direction="horizontal"),
                dict(type="RandomFlip", prob=1.0, direction="horizontal"),
            ],
            [dict(type="LoadAnnotations")],
            [dict(type="PackSegInputs")],
        ],
    ),
]


def _loader(split, pipeline, batch_size, num_workers, shuffle):
    return dict(
        batch_size=batch_size,
        num_workers=num_workers,
        persistent_workers=True,
        sampler=dict(type="DefaultSampler", shuffle=shuffle),
        dataset=dict(
            type=dataset_type,
            data_root=data_root,
            data_prefix=dict(img_path=f"images/{split}", seg_map_path=f"annotations/{split}"),
            pipeline=pipeline,
        ),
    )


train_dataloader = _loader("train", train_pipeline, batch_size=4, num_workers=4, shuffle=True)
val_dataloader = _loader("val", test_pipeline, batch_size=1, num_workers=2, shuffle=False)
test_dataloader = _loader("test", test_pipeline, batch_size=1, num_workers=2, shuffle=False)
val_evaluator = dict(type="CoralSegMetric")  # per-class IoU/Acc, mIoU, confusion matrix
test_evaluator = val_evaluator
