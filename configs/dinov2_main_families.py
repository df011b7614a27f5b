# Hierarchical training, step 1: the guide's recipe on the coarse taxonomy
# (background + 6 coral families). Prepare the data at that level first:
#   CORAL_TAXONOMY=coarse python prepare_data.py criobe_finegrained_fo
#   python train.py configs/dinov2_main_families.py
_base_ = ["./dinov2_vitb14_coralsegv4_ms_config_segformer.py"]
from dataset.info import dataset_class_info

taxonomy = "coarse"
data_root = "data/prepared_for_training/criobe_finegrained_coarse"
dataset_info = dataset_class_info(data_root, taxonomy)

model = dict(decode_head=dict(num_classes=dataset_info["num_classes"]))
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = dict(dataset=dict(data_root=data_root))
