"""DINOv2 weights from Meta, Hugging Face or timm, converted to one layout (timm's).

Three formats circulate for the same network:
- Meta's release (`dinov2_vitb14_pretrain.pth`): `blocks.N.attn.qkv`, `ls1.gamma`,
  a `mask_token`, and for ViT-g a SwiGLU MLP named `w12` / `w3`;
- Hugging Face `Dinov2Model` (`model.safetensors` or `pytorch_model.bin` in a
  folder or on the hub): `embeddings.*`, `encoder.layer.N.attention.attention.{query,key,value}`,
  `layer_scale1.lambda1`, `layernorm`;
- timm (`vit_*_patch14_dinov2`), the layout the backbone uses.
Files are read with `torch.load(weights_only=True)` or safetensors: no pickled code runs.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded into the backbone; the message says why."""


class PretrainedUnavailableError(CheckpointError):
    """The pretrained weights named in the config are neither on disk nor reachable."""


def read_state_dict(source: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file, a Hugging Face folder, or a hub id (facebook/dinov2-base)."""
    path = locate_pretrained(source)
    if path.is_dir():
        for name in HF_WEIGHT_FILES:
            if (path / name).is_file():
                return read_state_dict(path / name)
        raise CheckpointError(f"{path} holds none of {HF_WEIGHT_FILES}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "module"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    return loaded


def is_hub_id(source: str | Path) -> bool:
    return bool(re.fullmatch(r"[\w.\-]+/[\w.\-]+", str(source)))


def locate_pretrained(source: str | Path) -> Path:
    """The local file or folder of `source`: a path as given, or for a hub id the snapshot
    folder in huggingface_hub's cache (fetched there once; found there offline)."""
    path = Path(source).expanduser()
    if path.exists():
        return path
    if is_hub_id(source):
        return _download_from_hub(str(source))
    raise PretrainedUnavailableError(
        f"Pretrained weights {str(source)!r} not found: give a .pth/.bin/.safetensors file, "
        "a Hugging Face model folder, or a hub id such as facebook/dinov2-base."
    )


def _download_from_hub(repo_id: str) -> Path:
    from huggingface_hub import constants, snapshot_download

    try:
        # offline, huggingface_hub returns the cached snapshot when there is one
        folder = snapshot_download(repo_id, allow_patterns=["*.json", *HF_WEIGHT_FILES])
    except Exception as exc:  # offline, unknown id, no permission: all need the same advice
        raise PretrainedUnavailableError(
            f"Could not get the DINOv2 weights {repo_id!r}: they are not in the Hugging Face "
            f"cache ({constants.HF_HUB_CACHE}) and the hub could not be reached "
            f"({type(exc).__name__}: {exc}).\nTo work offline, give a local copy: on a machine "
            f"with network run `hf download {repo_id} --local-dir dinov2-weights` (or fetch "
            "Meta's dinov2_vitb14_pretrain.pth), copy it here and add\n"
            "  --cfg-options model.backbone.pretrained=/path/to/dinov2-weights\n"
            "to the train command (a folder, .pth, .bin or .safetensors file), or copy a "
            "filled hub cache and point HF_HUB_CACHE at it."
        ) from exc
    return Path(folder)


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if any(k.startswith("backbone.") for k in state):  # a whole segmentor checkpoint
        state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    if any(k.startswith("vit.") for k in state):  # our own backbone's state dict
        state = {k[len("vit.") :]: v for k, v in state.items() if k.startswith("vit.")}
    for prefix in ("module.", "dinov2.", "model."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def detect_format(state: dict[str, torch.Tensor]) -> str:
    if "embeddings.patch_embeddings.projection.weight" in state:
        return "huggingface"
    if "patch_embed.proj.weight" in state:
        return "meta" if "mask_token" in state or any(".ls1.gamma" in k for k in state) else "timm"
    raise CheckpointError(
        "Unrecognised checkpoint: expected DINOv2 weights in Meta, Hugging Face or timm layout; "
        f"first keys are {list(state)[:5]}"
    )


def convert_meta(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        if key == "mask_token":  # only used by the self-supervised objective
            continue
        key = key.replace(".mlp.w12.", ".mlp.fc1.").replace(".mlp.w3.", ".mlp.fc2.")
        out[key] = value
    return out


# Files keep the original names (attention.attention.query, attention.output.dense);
# transformers >= 5 names the loaded modules attention.q_proj ... o_proj, so a
# state_dict() taken from a model in memory has those. Both are accepted.
_HF_QKV = re.compile(
    r"^encoder\.layer\.(\d+)\.attention\.(?:attention\.)?(query|key|value|q_proj|k_proj|v_proj)\.(\w+)$"
)
_HF_RENAMES = [
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.position_embeddings$", "pos_embed"),
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^encoder\.layer\.(\d+)\.norm(\d)\.", r"blocks.\1.norm\2."),
    (r"^encoder\.layer\.(\d+)\.attention\.(?:output\.dense|o_proj)\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layer\.(\d+)\.layer_scale(\d)\.lambda1$", r"blocks.\1.ls\2.gamma"),
    (r"^encoder\.layer\.(\d+)\.mlp\.(fc\d)\.", r"blocks.\1.mlp.\2."),
    (r"^encoder\.layer\.(\d+)\.mlp\.weights_in\.", r"blocks.\1.mlp.fc1."),
    (r"^encoder\.layer\.(\d+)\.mlp\.weights_out\.", r"blocks.\1.mlp.fc2."),
    (r"^layernorm\.", "norm."),
]


def convert_huggingface(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key == "embeddings.mask_token":
            continue
        match = _HF_QKV.match(key)
        if match:
            block, part, kind = match.groups()
            qkv.setdefault((block, kind), {})[part[0]] = value  # q, k or v
            continue
        for pattern, replacement in _HF_RENAMES:
            new_key, count = re.subn(pattern, replacement, key)
            if count:
                out[new_key] = value
                break
        else:
            out[key] = value  # reported as unexpected by load_into
    for (block, kind), parts in qkv.items():
        out[f"blocks.{block}.attn.qkv.{kind}"] = torch.cat([parts[p] for p in "qkv"])
    return out


def to_timm_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = _strip_prefixes(dict(state))
    kind = detect_format(state)
    if kind == "huggingface":
        return convert_huggingface(state)
    if kind == "meta":
        return convert_meta(state)
    return state


def _resample_pos_embed(
    value: torch.Tensor, target: torch.Tensor, prefix_tokens: int
) -> torch.Tensor:
    from timm.layers import resample_abs_pos_embed

    grid = int(round((target.shape[1] - prefix_tokens) ** 0.5))
    return resample_abs_pos_embed(value, (grid, grid), num_prefix_tokens=prefix_tokens)


def load_into(vit: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load converted weights into a timm ViT; wrong shapes are refused, gaps reported together."""
    state = to_timm_layout(state)
    own = vit.state_dict()
    pos = state.get("pos_embed")
    if (
        pos is not None
        and pos.shape != own["pos_embed"].shape
        and pos.shape[-1] == own["pos_embed"].shape[-1]
    ):
        state["pos_embed"] = _resample_pos_embed(pos, own["pos_embed"], vit.num_prefix_tokens)
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if mismatched:
        raise CheckpointError(
            f"{source} is for another architecture; shapes that differ:\n  "
            + "\n  ".join(mismatched)
            + "\nChoose the backbone `arch` that matches the checkpoint "
            "(vits14, vitb14, vitl14, vitg14)."
        )
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        log.warning(
            "Loading %s: %d missing key(s) %s; %d unexpected key(s) %s",
            source, len(missing), missing[:20], len(unexpected), unexpected[:20],
        )  # fmt: skip
    vit.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    log.info("Loaded DINOv2 weights from %s (%d tensors)", source, len(set(state) & set(own)))
