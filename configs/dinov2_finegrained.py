# Hierarchical training, step 2: fine-tune on the genera starting from the
# families model. The backbone loads; the head, with another class count, starts
# fresh. train.py keeps best_mIoU.pth pointing at the best checkpoint of a run.
#   python train.py configs/dinov2_finegrained.py
_base_ = ["./dinov2_vitb14_coralsegv4_ms_config_segformer.py"]

load_from = "work_dirs/dinov2_main_families/best_mIoU.pth"
