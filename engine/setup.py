"""Turn a config and the command line into a runnable mmengine config, and check the data first."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from mmengine.config import Config

from dataset import IMAGE_SUFFIXES
from dataset.info import INFO_FILE, read_dataset_info


class DataConfigError(ValueError):
    """The config and the prepared data disagree; the message names the file to fix."""


def load_config(config: str, cfg_options: dict | None = None) -> Config:
    if not os.path.isfile(config):
        raise FileNotFoundError(f"Config {config} does not exist")
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def default_work_dir(config: str) -> str:
    return os.path.join("work_dirs", Path(config).stem)


def check_data(cfg: Config, config: str, loaders: tuple[str, ...]) -> None:
    """Stop before any work when data_root, a split or the class count is wrong."""
    for loader in loaders:
        dataset = cfg[loader]["dataset"]
        root = Path(dataset["data_root"])
        if not root.is_dir():
            raise DataConfigError(
                f"data_root '{root}' ({loader} in {config}) does not exist. Prepare the dataset "
                f"first (python prepare_data.py <fiftyone dataset>) or fix data_root in {config}."
            )
        images = root / dataset["data_prefix"]["img_path"]
        if not images.is_dir() or not any(
            p.suffix.lower() in IMAGE_SUFFIXES for p in images.iterdir()
        ):
            raise DataConfigError(
                f"The {loader.split('_')[0]} split is empty: no image in {images}. Tag samples "
                f"with that split in FiftyOne and run prepare_data.py again, or point {config} "
                "at another data_root."
            )
        info_file = root / INFO_FILE
        if not info_file.is_file():
            continue
        expected = read_dataset_info(info_file).get("num_classes")
        configured = cfg.model.decode_head.num_classes
        if expected is not None and expected != configured:
            raise DataConfigError(
                f"{config} sets decode_head.num_classes={configured}, but the dataset in {root} "
                f"has {expected} classes ({info_file}). Take the class count from dataset_info "
                "as configs/dinov2_vitb14_coralsegv4_ms_config_segformer.py does, or prepare the "
                "data with the taxonomy the config expects."
            )


def _sync_bn_to_bn(node):
    if isinstance(node, dict):
        if node.get("type") == "SyncBN":
            node["type"] = "BN"
        for value in node.values():
            _sync_bn_to_bn(value)
    elif isinstance(node, list | tuple):
        for value in node:
            _sync_bn_to_bn(value)


def set_launcher(cfg: Config, launcher: str) -> None:
    """Distributed set-up: NCCL on GPUs (mmengine's own path); gloo on CPU.

    mmengine assumes a GPU per process (it calls torch.cuda.set_device and gives DDP
    device ids), so for CPU processes started by torchrun the process group is
    created here, DDP gets no device ids and SyncBN (CUDA only) becomes BN.
    """
    cfg.launcher = launcher
    if launcher == "none":
        return
    if torch.cuda.is_available():
        cfg.setdefault("env_cfg", {}).setdefault("dist_cfg", {})["backend"] = "nccl"
        return
    if launcher != "pytorch":
        raise DataConfigError(
            f"--launcher {launcher} needs GPUs; on CPU use torchrun with --launcher pytorch"
        )
    import torch.distributed as dist

    if "RANK" not in os.environ and not dist.is_initialized():
        raise DataConfigError(
            "--launcher pytorch: start the command with torchrun (torchrun --nproc_per_node N "
            "... --launcher pytorch)"
        )
    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    cfg.model_wrapper_cfg = dict(
        type="MMDistributedDataParallel", device_ids=None, broadcast_buffers=False
    )
    _sync_bn_to_bn(cfg.model)


def enable_amp(cfg: Config) -> str:
    """bf16 where the GPU supports it, else fp16; returns what was chosen."""
    if not torch.cuda.is_available():
        return "ignored: no CUDA GPU, training in fp32"
    dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    cfg.optim_wrapper.type = "AmpOptimWrapper"
    cfg.optim_wrapper.dtype = dtype
    if dtype == "float16":
        cfg.optim_wrapper.loss_scale = "dynamic"
    return dtype


def add_hook(cfg: Config, hook: dict) -> None:
    hooks = [h for h in cfg.get("custom_hooks", []) if h.get("type") != hook["type"]]
    cfg.custom_hooks = [*hooks, hook]


def plan_backbone_weights(cfg: Config, config: str, checkpoint: str | None) -> tuple[int, str]:
    """Where the DINOv2 backbone's starting weights come from: (log level, message).

    checkpoint: the --load-from or --resume file whose weights replace the backbone's;
    the config's pretrained weights are then not loaded (so no download is needed).
    Otherwise a hub id is fetched into huggingface_hub's cache (or found there
    offline) before any work starts; PretrainedUnavailableError says how to pass a
    local copy. pretrained=None trains from random weights, with a warning.
    """
    from models.dinov2_checkpoint import locate_pretrained

    backbone = cfg.model.get("backbone", {})
    if backbone.get("type") != "DINOv2":
        return logging.DEBUG, ""
    if checkpoint:
        backbone.pretrained = None
        return logging.INFO, f"Backbone weights come from {checkpoint}"
    source = backbone.get("pretrained")
    if not source:
        return logging.WARNING, (
            f"model.backbone.pretrained is None in {config}: the DINOv2 backbone starts from "
            "RANDOM weights (meant for the tiny demo and tests). To fine-tune DINOv2, set it to "
            "'facebook/dinov2-base' or a local file or folder."
        )
    path = locate_pretrained(source)
    where = "" if str(path) == str(source) else f" ({path})"
    return logging.INFO, f"Backbone starts from the DINOv2 weights {source}{where}"
