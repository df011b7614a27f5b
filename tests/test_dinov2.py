"""The DINOv2 backbone: numerics against transformers' Dinov2Model, checkpoint formats,
frozen stages, gradient checkpointing and odd input sizes."""

from __future__ import annotations

import pytest
import torch

from models.dinov2 import DINOv2
from models.dinov2_checkpoint import CheckpointError, load_into, read_state_dict

SMALL = dict(embed_dim=96, depth=4, num_heads=3)


@pytest.fixture(scope="module")
def hf_model():
    """A randomly initialised transformers Dinov2Model, with layer scales far from their
    1e-5 init so every block matters in the comparison."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(
        hidden_size=96, num_hidden_layers=4, num_attention_heads=3, intermediate_size=384,
        image_size=518, patch_size=14, layerscale_value=1e-5,
    )  # fmt: skip
    model = Dinov2Model(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lambda1" in name:
                param.uniform_(0.5, 1.0)
            elif "norm" in name and name.endswith("weight"):
                param.normal_(1.0, 0.1)
            else:
                param.normal_(0.0, 0.05)
    return model


def hf_features(model, images: torch.Tensor, indices) -> list[torch.Tensor]:
    with torch.no_grad():
        hidden = model(pixel_values=images, output_hidden_states=True).hidden_states
    batch, _, height, width = images.shape
    out = []
    for i in indices:
        tokens = model.layernorm(hidden[i + 1])[:, 1:]
        out.append(tokens.transpose(1, 2).reshape(batch, -1, height // 14, width // 14))
    return out


def ours_from_state(state, **kwargs) -> DINOv2:
    backbone = DINOv2(arch=SMALL, out_indices=[0, 1, 2, 3], **kwargs)
    load_into(backbone.vit, state)
    return backbone.eval()


def features(backbone, images):
    with torch.no_grad():
        return backbone(images)


def test_matches_transformers_dinov2_at_518(hf_model):
    images = torch.randn(2, 3, 518, 518)
    ours = features(ours_from_state(hf_model.state_dict()), images)
    for mine, reference in zip(ours, hf_features(hf_model, images, [0, 1, 2, 3]), strict=True):
        assert mine.shape == reference.shape == (2, 96, 37, 37)
        assert (mine - reference).abs().max().item() <= 1e-4


def test_close_to_transformers_at_another_size(hf_model):
    images = torch.randn(1, 3, 364, 644)
    ours = features(ours_from_state(hf_model.state_dict()), images)
    for mine, reference in zip(ours, hf_features(hf_model, images, [0, 1, 2, 3]), strict=True):
        assert mine.shape == (1, 96, 26, 46)
        relative = ((mine - reference).norm() / reference.norm()).item()
        assert relative <= 3e-2


def to_meta_layout(timm_state: dict) -> dict:
    """Meta's release names (what dinov2_vitb14_pretrain.pth holds): timm's plus mask_token."""
    meta = dict(timm_state)
    meta["mask_token"] = torch.zeros(1, timm_state["cls_token"].shape[-1])
    return meta


def test_every_checkpoint_format_loads_to_identical_outputs(hf_model, tmp_path):
    from safetensors.torch import save_file

    reference = ours_from_state(hf_model.state_dict())
    timm_state = reference.vit.state_dict()
    hf_model.save_pretrained(tmp_path / "hf_safetensors")
    hf_model.save_pretrained(tmp_path / "hf_bin", safe_serialization=False)
    torch.save(to_meta_layout(timm_state), tmp_path / "dinov2_small_pretrain.pth")
    save_file({k: v.contiguous() for k, v in timm_state.items()}, tmp_path / "timm.safetensors")
    torch.save({"state_dict": {f"backbone.vit.{k}": v for k, v in timm_state.items()}},
               tmp_path / "segmentor.pth")  # fmt: skip
    images = torch.randn(1, 3, 98, 126)
    expected = features(reference, images)
    sources = ["hf_safetensors", "hf_bin", "dinov2_small_pretrain.pth", "timm.safetensors",
               "segmentor.pth"]  # fmt: skip
    for source in sources:
        backbone = DINOv2(arch=SMALL, out_indices=[0, 1, 2, 3], pretrained=str(tmp_path / source))
        backbone.init_weights()
        got = features(backbone.eval(), images)
        for a, b in zip(got, expected, strict=True):
            assert torch.equal(a, b), source


def test_wrong_architecture_is_refused_with_the_shapes(hf_model):
    other = DINOv2(arch=dict(embed_dim=48, depth=4, num_heads=3), out_indices=[3])
    with pytest.raises(
        CheckpointError, match=r"shapes that differ:\n  cls_token: checkpoint \(1, 1, 96\)"
    ):
        load_into(other.vit, hf_model.state_dict(), "hf")


def test_missing_keys_are_reported_in_one_message(hf_model, caplog):
    state = {k: v for k, v in hf_model.state_dict().items() if "layer.3." not in k}
    with caplog.at_level("WARNING"):
        ours_from_state(state)
    assert "missing key(s)" in caplog.text and "blocks.3.attn.qkv.weight" in caplog.text


def test_unreadable_sources_are_explained(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "nothing.pth")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds none of"):
        read_state_dict(tmp_path / "empty")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="Unrecognised checkpoint"):
        load_into(DINOv2(arch=SMALL, out_indices=[3]).vit, read_state_dict(tmp_path / "other.pth"))


def test_pickled_code_is_not_executed(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(Exception, match="Weights only load failed|Unsupported"):
        read_state_dict(tmp_path / "evil.pth")


def test_frozen_stages_get_no_gradients_and_stay_in_eval():
    backbone = DINOv2(arch=SMALL, out_indices=[3], frozen_stages=2, drop_path_rate=0.1).train()
    assert not backbone.vit.patch_embed.training
    assert not backbone.vit.blocks[1].training and backbone.vit.blocks[2].training
    sum(f.sum() for f in backbone(torch.randn(1, 3, 56, 56))).backward()
    assert backbone.vit.patch_embed.proj.weight.grad is None
    assert all(p.grad is None for p in backbone.vit.blocks[:2].parameters())
    assert all(p.grad is not None for p in backbone.vit.blocks[2:].parameters())


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    torch.manual_seed(0)
    plain = DINOv2(arch=SMALL, out_indices=[1, 3])
    checkpointed = DINOv2(arch=SMALL, out_indices=[1, 3], use_checkpoint=True)
    checkpointed.load_state_dict(plain.state_dict())
    images = torch.randn(2, 3, 56, 70)
    losses = []
    for model in (plain, checkpointed):
        loss = sum((f**2).mean() for f in model.train()(images))
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    for (name, a), (_, b) in zip(
        plain.named_parameters(), checkpointed.named_parameters(), strict=True
    ):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_odd_input_sizes_are_padded_to_whole_patches():
    backbone = DINOv2(arch=SMALL, out_indices=[-1]).eval()
    odd = torch.randn(1, 3, 75, 101)
    padded = torch.nn.functional.pad(odd, (0, 112 - 101, 0, 84 - 75))
    (a,), (b,) = features(backbone, odd), features(backbone, padded)
    assert a.shape == (1, 96, 6, 8)
    torch.testing.assert_close(a, b)


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="Unknown DINOv2 arch 'vitx14'"):
        DINOv2(arch="vitx14")
    with pytest.raises(ValueError, match="out of range for 4 blocks"):
        DINOv2(arch=SMALL, out_indices=[4])
