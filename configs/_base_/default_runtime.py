# Runtime shared by every config: mmseg scope, our registrations, logging and TensorBoard.
default_scope = "mmseg"
# `models` registers the DINOv2 backbone, the patch-aligned segmentor and the
# layer-decay optimizer (and installs the mmcv.ops stand-in before mmseg's models);
# `dataset.mmseg_dataset` registers CoralDataset, `dataset.transforms` the training
# transforms; `engine` the metric, hooks and runner.
custom_imports = dict(
    imports=["models", "dataset.mmseg_dataset", "dataset.transforms", "engine"],
    allow_failed_imports=False,
)
env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
    dist_cfg=dict(backend="nccl"),
)
vis_backends = [dict(type="LocalVisBackend"), dict(type="TensorboardVisBackend")]
visualizer = dict(type="SegLocalVisualizer", vis_backends=vis_backends, name="visualizer")
log_processor = dict(by_epoch=True)
log_level = "INFO"
load_from = None
resume = False
tta_model = dict(type="SegTTAModel")
