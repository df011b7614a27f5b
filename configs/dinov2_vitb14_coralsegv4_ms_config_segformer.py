# The guide's recipe: DINOv2-B/14 + SegFormer head, multi-scale training on 1280
# crops, 160 epochs, fine taxonomy (background + 16 genera).
#   python train.py configs/dinov2_vitb14_coralsegv4_ms_config_segformer.py
_base_ = [
    "./_base_/models/dinov2_segformer.py",
    "./_base_/datasets/coral.py",
    "./_base_/schedules/schedule_160e.py",
    "./_base_/default_runtime.py",
]
from dataset.info import dataset_class_info

taxonomy = "fine"
data_root = "data/prepared_for_training/criobe_finegrained"
# Classes, palette and class count come from the prepared dataset (its taxonomy
# file where the folder is absent, e.g. on an inference machine).
dataset_info = dataset_class_info(data_root, taxonomy)
# True: weigh the loss by the dataset's median-frequency class weights (rare genera higher).
use_class_weights = False

model = dict(
    # DINOv2's weights: a hub id (fetched once into the Hugging Face cache), or offline a
    # local .pth / .safetensors file or model folder
    backbone=dict(pretrained="facebook/dinov2-base"),
    decode_head=dict(
        num_classes=dataset_info["num_classes"],
        loss_decode=dict(class_weight=dataset_info["class_weights"] if use_class_weights else None),
    ),
)
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = dict(dataset=dict(data_root=data_root))
# Layer-wise lr decay for the backbone (often better for DINOv2 fine-tuning):
# optim_wrapper = dict(constructor="LayerDecayOptimWrapperConstructor",
#                      paramwise_cfg=dict(layer_decay_rate=0.9))
