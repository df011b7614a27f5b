"""CoralSCoP: SAM ViT-B whose mask decoder also says, for every mask, coral or not.

CoralSCoP (Zheng et al., CVPR 2024) fine-tunes SAM on corals and adds a category
branch to the mask decoder. Everything else is segment-anything's own code; this
module adds only that branch, with the parameter names of the released
checkpoint `vit_b_coralscop.pth` so it loads with strict key matching:

- `cate_output_hypernetworks_mlps.{i}`: one MLP 256-256-256-32 per mask token,
- `cate_feature_projection_head`: MLP 256-256-32 on the transformer's image tokens,
- `cate_prediction_head`: MLP 4096-256-2 over their product (64x64 = 4096 tokens);
  output 0 is background, 1 coral.

A stock SAM checkpoint (`sam_vit_b_01ec64.pth`) loads too, with the category filter off.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)
from segment_anything.modeling.mask_decoder import MLP
from torch import nn

from .safe_checkpoint import safe_load

log = logging.getLogger(__name__)

SAM_VIT_B = dict(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11))
# a SAM small enough for CPU tests and the benchmarks' smoke runs (random weights only)
SAM_TINY = dict(embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,))
IMAGE_SIZE, PATCH_SIZE, PROMPT_DIM = 1024, 16, 256
CATEGORY_PREFIX = "mask_decoder.cate_"
# set on the image encoder of a model left with random weights (no checkpoint): a new draw
# every run, so models/sam_openvino.py keeps its export out of the cache
RANDOM_WEIGHTS_MARK = "coral_random_weights"


class CategoryMaskDecoder(MaskDecoder):
    """SAM's MaskDecoder plus CoralSCoP's coral/background head per output mask.

    `forward` keeps SAM's contract (masks, iou predictions), so segment-anything's
    SamPredictor and automatic generator work unchanged; `predict_with_category`
    also returns the category logits (B, num_masks, 2).
    """

    def __init__(self, *args, category_dim: int = 32, num_categories: int = 2, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        dim = self.transformer_dim
        tokens = (IMAGE_SIZE // PATCH_SIZE) ** 2
        self.cate_output_hypernetworks_mlps = nn.ModuleList(
            [MLP(dim, dim, category_dim, 3) for _ in range(self.num_mask_tokens)]
        )
        self.cate_feature_projection_head = MLP(dim, dim, category_dim, 3)
        self.cate_prediction_head = MLP(tokens, 256, num_categories, 3)
        # SAM's predict_masks keeps the transformer outputs to itself; a forward hook
        # hands them to the category branch without re-implementing that method.
        self._transformer_out: tuple[torch.Tensor, torch.Tensor] | None = None
        self.transformer.register_forward_hook(self._keep_transformer_output)

    def _keep_transformer_output(self, module, inputs, output) -> None:
        self._transformer_out = output

    def _category_logits(self) -> torch.Tensor:
        queries, image_tokens = self._transformer_out
        self._transformer_out = None
        return self.category_logits(queries, image_tokens)

    def category_logits(self, queries: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        """(B, num_mask_tokens, 2) from the two-way transformer's outputs: queries
        (B, tokens, C) and image tokens (B, 4096, C)."""
        mask_tokens = queries[:, 1 : 1 + self.num_mask_tokens]
        per_mask = torch.stack(
            [mlp(mask_tokens[:, i]) for i, mlp in enumerate(self.cate_output_hypernetworks_mlps)],
            dim=1,
        )  # (B, masks, 32)
        per_token = self.cate_feature_projection_head(image_tokens)  # (B, 4096, 32)
        return self.cate_prediction_head(per_mask @ per_token.transpose(1, 2))  # (B, masks, 2)

    def predict_with_category(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        masks, iou_pred = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        category = self._category_logits()
        chosen = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, chosen], iou_pred[:, chosen], category[:, chosen]


def build_coralscop(encoder: dict | None = None) -> Sam:
    """SAM with the category decoder; `encoder` sizes the image encoder (ViT-B by default)."""
    encoder = dict(SAM_VIT_B, **(encoder or {}))
    grid = IMAGE_SIZE // PATCH_SIZE
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=encoder["depth"],
            embed_dim=encoder["embed_dim"],
            img_size=IMAGE_SIZE,
            mlp_ratio=4,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            num_heads=encoder["num_heads"],
            patch_size=PATCH_SIZE,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=tuple(encoder["global_attn_indexes"]),
            window_size=14,
            out_chans=PROMPT_DIM,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=PROMPT_DIM,
            image_embedding_size=(grid, grid),
            input_image_size=(IMAGE_SIZE, IMAGE_SIZE),
            mask_in_chans=16,
        ),
        mask_decoder=CategoryMaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2, embedding_dim=PROMPT_DIM, mlp_dim=2048, num_heads=8
            ),
            transformer_dim=PROMPT_DIM,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def has_random_weights(module: nn.Module) -> bool:
    """Whether load_coralscop left this image encoder with random weights."""
    return bool(getattr(module, RANDOM_WEIGHTS_MARK, False))


class Bf16ImageEncoder(nn.Module):
    """SAM's PyTorch image encoder under CPU bf16 autocast (the setting of
    models/cpu_precision.py), its embedding handed on in f32: as with OpenVINO's bf16
    encoder, only the encoder's matrix products round to bf16; prompt decoding, its
    thresholds and the masks stay f32."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.img_size = encoder.img_size  # Sam.preprocess pads to it

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.encoder(image).float()


class SamCheckpointError(ValueError):
    """Not a CoralSCoP or SAM checkpoint of the expected architecture."""


def load_coralscop(checkpoint: str | Path | None, encoder: dict | None = None) -> tuple[Sam, bool]:
    """Build the model and load weights; returns (model, category filter enabled).

    - CoralSCoP checkpoint: every key must match (strict); the category filter is on.
    - Stock SAM checkpoint (no `cate_` keys): loaded strictly without them; filter off.
    - None: random weights (tests and the demo only), filter on, with a warning.
    """
    sam = build_coralscop(encoder)
    if checkpoint is None:
        log.warning(
            "No SAM checkpoint given: CoralSCoP runs with RANDOMLY INITIALISED weights. Its "
            "instance proposals are meaningless; use this only to exercise the pipeline."
        )
        setattr(sam.image_encoder, RANDOM_WEIGHTS_MARK, True)
        return sam, True
    state = safe_load(checkpoint)
    state = state.get("model", state.get("state_dict", state))
    own = sam.state_dict()
    has_category = any(k.startswith(CATEGORY_PREFIX) for k in state)
    expected = set(own) if has_category else {k for k in own if not k.startswith(CATEGORY_PREFIX)}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    reshaped = [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                for k in expected & set(state) if state[k].shape != own[k].shape]  # fmt: skip
    if missing or unexpected or reshaped:
        raise SamCheckpointError(
            f"{checkpoint} is not a SAM ViT-B / CoralSCoP checkpoint: "
            f"missing {missing[:8]}{' ...' if len(missing) > 8 else ''}; "
            f"unexpected {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}; "
            f"shapes {reshaped[:8]}"
        )
    sam.load_state_dict(state, strict=has_category)
    if not has_category:
        log.warning(
            "%s is a stock SAM checkpoint (no CoralSCoP category head): the coral/background "
            "filter is off, so every SAM mask becomes a proposal.", checkpoint,
        )  # fmt: skip
    return sam, has_category


def write_random_checkpoint(path: str | Path, seed: int = 0) -> Path:
    """A CoralSCoP ViT-B checkpoint with random weights and the released file's exact keys.

    For pipeline checks only (the demo, tests): no real weights can be downloaded here.
    """
    torch.manual_seed(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial")
    torch.save(build_coralscop().state_dict(), temporary)
    temporary.replace(path)
    return path


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "--write-random":
        sys.exit("usage: python -m models.coralscop --write-random PATH")
    written = write_random_checkpoint(sys.argv[2])
    print(f"Wrote RANDOM (untrained) CoralSCoP-shaped weights to {written}")
