# The guide's schedule in mmengine form: AdamW 1e-4, weight decay 0.01, gradient
# accumulation 2, poly decay per iteration (power 0.9, down to 1e-6) after a
# 2-epoch linear warm-up, 160 epochs, checkpoint and validation every 10 epochs,
# best-mIoU checkpoint kept as best_mIoU_epoch_N.pth.
max_epochs = 160
warmup_epochs = 2
optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=1e-4, betas=(0.9, 0.999), weight_decay=0.01),
    accumulative_counts=2,
)
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-3, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type="PolyLR", eta_min=1e-6, power=0.9, by_epoch=True, begin=warmup_epochs,
         end=max_epochs, convert_to_iter_based=True),
]  # fmt: skip
train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=max_epochs, val_interval=10)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=10, log_metric_by_epoch=True),
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(
        type="CheckpointHook", by_epoch=True, interval=10, save_best="mIoU", rule="greater",
        max_keep_ckpts=3,
    ),
    sampler_seed=dict(type="DistSamplerSeedHook"),
    visualization=dict(type="SegVisualizationHook"),
)  # fmt: skip
