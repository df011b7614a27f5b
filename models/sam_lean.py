"""SAM's prompt decoding for many single-point prompts on one image, with less work (CPU).

segment-anything's MaskDecoder is written for a GPU: every prompt gets its own copy
of the 64 x 64 image embedding, and every stage runs for every prompt. On a CPU that
is most of the time of automatic mask generation (2,048 prompts on a 1920 px quadrat
at CoralSCoP's settings). This module computes the same function with less work:

- the first two-way layer reads the image embedding, which is the same for all prompts,
  once (its projections broadcast over the prompts) instead of once per prompt;
- in the attention between the few prompt tokens (7) and the 4,096 image tokens, the
  projections are re-associated so that the per-prompt products scale with the tokens:
  softmax(q Wk (x + b)^T) x Wv equals the projected form, and the key bias drops out of
  the softmax; the image-to-token attention folds its query and output projections into
  the prompt's keys and values the same way. About a third of the multiply-adds remain;
- `decode_prompts` then runs the stages in order and stops early: the IoU head (cheap)
  first, CoralSCoP's category head only for prompts that pass the IoU threshold, the
  mask upscaling only for prompts that pass both.

Only the order of floating-point operations differs from segment-anything's; the
outputs agree to ~1e-5 (tests/test_inference.py compares them on random weights).
The weights are segment-anything's own modules, used as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from segment_anything.modeling import Sam
from segment_anything.modeling.transformer import Attention, TwoWayTransformer
from torch import Tensor


def _heads(attention: Attention) -> tuple[int, int]:
    return attention.num_heads, attention.internal_dim // attention.num_heads


def _image_times(small: Tensor, image: Tensor) -> Tensor:
    """small (B, m, C) against image tokens (B or 1, N, C): (B, m, N).

    The image operand stays untransposed (a transposed one is copied per call), and a
    shared image (batch 1) is one GEMM for all prompts."""
    if image.shape[0] == 1:
        flat = image[0] @ small.reshape(-1, small.shape[-1]).T  # (N, B*m)
        return flat.view(image.shape[1], *small.shape[:2]).permute(1, 2, 0)
    return torch.bmm(image, small.transpose(1, 2)).transpose(1, 2)


def _times_image(weights: Tensor, image: Tensor) -> Tensor:
    """weights (B, m, N) times image tokens (B or 1, N, C): (B, m, C)."""
    if image.shape[0] == 1:
        return (weights.reshape(-1, weights.shape[-1]) @ image[0]).view(*weights.shape[:2], -1)
    return torch.bmm(weights, image)


def token_to_image(attention: Attention, q_in: Tensor, k_in: Tensor, v_in: Tensor) -> Tensor:
    """SAM's Attention(q=tokens (B, n, C), k=k_in, v=v_in (B or 1, N, C)), re-associated."""
    batch, n, channels = q_in.shape
    heads, dim = _heads(attention)
    q = attention.q_proj(q_in).view(batch, n, heads, dim) / math.sqrt(dim)
    w_k = attention.k_proj.weight.view(heads, dim, channels)
    q_wk = torch.einsum("bnhd,hdc->bhnc", q, w_k).reshape(batch, heads * n, channels)
    weights = torch.softmax(_image_times(q_wk, k_in).contiguous(), dim=-1)
    mixed = _times_image(weights, v_in).view(batch, heads, n, channels)
    w_v = attention.v_proj.weight.view(heads, dim, channels)
    out = torch.einsum("bhnc,hdc->bnhd", mixed, w_v).reshape(batch, n, heads * dim)
    return attention.out_proj(out + attention.v_proj.bias)  # weights sum to 1: bias passes


def image_to_token(attention: Attention, q_in: Tensor, k_in: Tensor, v_in: Tensor) -> Tensor:
    """SAM's Attention(q=q_in (B or 1, N, C), k=tokens, v=tokens (B, n, C)), re-associated."""
    batch, n, channels = k_in.shape
    pixels = q_in.shape[1]
    heads, dim = _heads(attention)
    k = attention.k_proj(k_in).view(batch, n, heads, dim) / math.sqrt(dim)
    v = attention.v_proj(v_in).view(batch, n, heads, dim)
    w_q = attention.q_proj.weight.view(heads, dim, channels)
    k_wq = torch.einsum("hdc,bnhd->bhnc", w_q, k).reshape(batch, heads * n, channels)
    bias = torch.einsum("hd,bnhd->bhn", attention.q_proj.bias.view(heads, dim), k)
    scores = _image_times(k_wq, q_in) + bias.reshape(batch, heads * n, 1)
    # laid out (B, heads, tokens, pixels): the softmax runs over the few tokens, not
    # along the innermost axis (a softmax over 7 innermost values is slow on a CPU)
    weights = torch.softmax(scores.view(batch, heads, n, pixels), dim=2)
    w_out = attention.out_proj.weight.view(channels, heads, dim)
    v_wo = torch.einsum("bnhd,chd->bhnc", v, w_out).reshape(batch, heads * n, channels)
    out = torch.bmm(weights.view(batch, heads * n, pixels).transpose(1, 2), v_wo)
    return out + attention.out_proj.bias


def two_way(
    transformer: TwoWayTransformer, image: Tensor, image_pe: Tensor, tokens: Tensor
) -> tuple[Tensor, Tensor]:
    """TwoWayTransformer.forward for B prompts on one image: image and image_pe are
    (1, C, H, W), tokens (B, n, C); returns (queries (B, n, C), keys (B, H*W, C))."""
    keys = image.flatten(2).transpose(1, 2).contiguous()
    key_pe = image_pe.flatten(2).transpose(1, 2).contiguous()
    queries, point_pe = tokens, tokens
    for layer in transformer.layers:
        if layer.skip_first_layer_pe:
            queries = layer.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + point_pe
            queries = queries + layer.self_attn(q=q, k=q, v=queries)
        queries = layer.norm1(queries)
        k = keys + key_pe  # the same keys feed both cross attentions of the layer
        attended = token_to_image(layer.cross_attn_token_to_image, queries + point_pe, k, keys)
        queries = layer.norm2(queries + attended)
        queries = layer.norm3(queries + layer.mlp(queries))
        attended = image_to_token(layer.cross_attn_image_to_token, k, queries + point_pe, queries)
        keys = layer.norm4(keys + attended)
    attended = token_to_image(
        transformer.final_attn_token_to_image, queries + point_pe, keys + key_pe, keys
    )
    return transformer.norm_final_attn(queries + attended), keys


@dataclass
class Decoded:
    """The prompts' outputs that passed the filters, flattened over (prompt, output)."""

    low_res: Tensor  # (K, 256, 256) mask logits
    iou: Tensor  # (K,)
    coral: Tensor  # (K,) 1.0 without a category head


def prompt_scores(
    sam: Sam, features: Tensor, points: Tensor, multimask_output: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """The two-way transformer's queries and keys, and the IoU predictions (B, k), of single
    positive point prompts (B, 2) on one image's embedding: what every filter needs
    before any mask is upscaled."""
    decoder = sam.mask_decoder
    labels = torch.ones(points.shape[0], 1, dtype=torch.int, device=points.device)
    sparse, dense = sam.prompt_encoder(points=(points[:, None, :], labels), boxes=None, masks=None)
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat([output_tokens.expand(sparse.shape[0], -1, -1), sparse], dim=1)
    # without a mask prompt the dense embedding is the same for every prompt
    image = features + dense[:1]
    queries, keys = two_way(decoder.transformer, image, sam.prompt_encoder.get_dense_pe(), tokens)
    iou = decoder.iou_prediction_head(queries[:, 0])[:, _chosen(multimask_output)]
    return queries, keys, iou


def coral_probability(sam: Sam, queries: Tensor, keys: Tensor, multimask_output: bool) -> Tensor:
    """CoralSCoP's category head: the probability that each output is coral, (B, k)."""
    category = sam.mask_decoder.category_logits(queries, keys)[:, _chosen(multimask_output)]
    return category.float().softmax(-1)[..., 1]


def _chosen(multimask_output: bool) -> slice:
    return slice(1, None) if multimask_output else slice(0, 1)


def decode_prompts(
    sam: Sam,
    features: Tensor,
    points: Tensor,
    multimask_output: bool,
    iou_threshold: float,
    use_category: bool,
    coral_threshold: float = 0.5,
) -> Decoded:
    """Decode single positive point prompts (B, 2), in input-frame pixels, on one image's
    embedding (1, C, H, W); keep outputs with IoU prediction > iou_threshold (0 keeps
    all) and, with the category head, coral probability > coral_threshold (0.5: the
    argmax of background and coral, CoralSCoP's rule). Same outputs as the generator's
    batched path for the kept ones (SamPredictor-style prompting, pad point included)."""
    decoder = sam.mask_decoder
    queries, keys, iou = prompt_scores(sam, features, points, multimask_output)
    outputs = range(decoder.num_mask_tokens)[_chosen(multimask_output)]
    # 0 turns the filter off, as in segment-anything (random weights predict negative IoUs:
    # a benchmark may set a negative threshold)
    keep = iou > iou_threshold if iou_threshold != 0 else torch.ones_like(iou, dtype=torch.bool)
    coral = torch.ones_like(iou)
    prompts = torch.nonzero(keep.any(1)).flatten()
    if use_category and len(prompts):
        coral[prompts] = coral_probability(sam, queries[prompts], keys[prompts], multimask_output)
        keep &= coral > coral_threshold
        prompts = torch.nonzero(keep.any(1)).flatten()
    if not len(prompts):
        empty = iou.new_zeros(0)
        return Decoded(iou.new_zeros((0, *_low_res_size(keys))), empty, empty)
    side = int(math.isqrt(keys.shape[1]))
    embedding = keys[prompts].transpose(1, 2).reshape(len(prompts), -1, side, side)
    upscaled = decoder.output_upscaling(embedding).flatten(2)  # (P, 32, 4*side * 4*side)
    hyper = torch.stack(
        [decoder.output_hypernetworks_mlps[i](queries[prompts, 1 + i]) for i in outputs], dim=1
    )  # (P, k, 32)
    low_res = (hyper @ upscaled).view(len(prompts), len(outputs), 4 * side, 4 * side)
    kept = keep[prompts]
    return Decoded(low_res[kept], iou[prompts][kept], coral[prompts][kept])


def _low_res_size(keys: Tensor) -> tuple[int, int]:
    side = 4 * int(math.isqrt(keys.shape[1]))
    return side, side
