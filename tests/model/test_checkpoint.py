"""The released layout loads unchanged (names, config fields, tower resolution) and our saves round-trip."""
import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

import xmodelvlm  # noqa: F401  (registers the Auto classes)
from xmodelvlm import load_pretrained_model
from xmodelvlm.errors import UserError
from xmodelvlm.model import XmodelVLMConfig, XmodelVLMForCausalLM
from xmodelvlm.model.make_tiny import TINY_TOWER


def stored_names(directory):
    with safe_open(directory / "model.safetensors", framework="pt") as f:
        return set(f.keys())


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def released_config(released_config_path):
    return json.loads(released_config_path.read_text())


def test_released_config_fields(released_config):
    config = XmodelVLMConfig(**released_config)
    assert (config.hidden_size, config.num_hidden_layers, config.num_key_value_heads) == (2048, 24, 4)
    assert config.mm_projector_type == "xdpnetv10_4" and config.mm_hidden_size == 1024
    assert config.image_aspect_ratio == "pad" and config.mm_vision_select_layer == -2
    tower = config.vision_tower_config()  # no CLIP directory: the standard ViT-L/14-336
    assert (tower.hidden_size, tower.num_hidden_layers, tower.image_size, tower.patch_size) == (1024, 24, 336, 14)
    assert "auto_map" not in config.to_dict()


def test_released_config_builds_released_tensor_names_and_144_tokens(released_config):
    config = XmodelVLMConfig(**released_config)
    with torch.device("meta"):
        model = XmodelVLMForCausalLM(config)
    assert model.num_image_tokens == 144
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["model.mm_projector.mlp.0.weight"] == (2048, 4096)
    assert shapes["model.layers.23.self_attn.k_proj.weight"] == (256, 2048)  # 4 KV heads × 64
    assert shapes["lm_head.weight"] == (32000, 2048)
    assert shapes["model.vision_tower.vision_tower.vision_model.encoder.layers.23.mlp.fc2.weight"] == (1024, 4096)
    assert "model.vision_tower.vision_tower.vision_model.post_layernorm.weight" in shapes
    total = sum(v.numel() for v in model.state_dict().values())
    assert 1.3e9 < total < 1.6e9  # 1.1B LM + 0.3B CLIP-L + projector: the ~3.0 GB bf16 file


def test_tiny_released_layout_loads_with_no_missing_or_unexpected(tiny_checkpoint):
    model, info = XmodelVLMForCausalLM.from_pretrained(tiny_checkpoint, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert set(model.state_dict()) == stored_names(tiny_checkpoint)
    assert model.get_vision_tower().config.hidden_size == TINY_TOWER["hidden_size"]  # read off the shapes


def test_load_with_and_without_clip_directory(tiny_checkpoints):
    full, towerless, clip = tiny_checkpoints
    _, from_ckpt, proc_a, context = load_pretrained_model(full, device="cpu")
    _, with_clip, proc_b, _ = load_pretrained_model(full, vision_tower=str(clip), device="cpu")
    _, clip_only, proc_c, _ = load_pretrained_model(towerless, vision_tower=str(clip), device="cpu")
    assert same_weights(from_ckpt, with_clip) and same_weights(from_ckpt, clip_only)
    assert context == 2048
    for processor in (proc_a, proc_b, proc_c):
        assert processor.crop_size["height"] == TINY_TOWER["image_size"]


def test_no_tower_anywhere_names_the_flag(tiny_checkpoints):
    _, towerless, _ = tiny_checkpoints
    with pytest.raises(UserError, match="pass --vision-tower"):
        load_pretrained_model(towerless, device="cpu")
    with pytest.raises(UserError, match="--vision-tower .*not a CLIP directory"):
        load_pretrained_model(towerless, vision_tower="/nonexistent/clip", device="cpu")


def test_automodel_after_import(tiny_checkpoints):
    full, towerless, clip = tiny_checkpoints
    model = AutoModelForCausalLM.from_pretrained(full)
    assert isinstance(model, XmodelVLMForCausalLM)
    assert same_weights(model, AutoModelForCausalLM.from_pretrained(towerless, vision_tower=str(clip)))


def test_save_pretrained_round_trip(tiny_checkpoint, tmp_path):
    model = XmodelVLMForCausalLM.from_pretrained(tiny_checkpoint).eval()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "xmodelvlm" and config["vision_config"]["hidden_size"] == TINY_TOWER["hidden_size"]
    assert stored_names(tmp_path) == stored_names(tiny_checkpoint)  # we save the released names
    again = XmodelVLMForCausalLM.from_pretrained(tmp_path).eval()
    assert same_weights(model, again)
    ids = torch.tensor([[1, -200, 5, 6]])
    image = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids, images=image).logits, again(input_ids=ids, images=image).logits)


def test_bad_checkpoints_are_user_errors(tiny_checkpoint, tmp_path):
    with pytest.raises(UserError, match="model directory not found"):
        load_pretrained_model(tmp_path / "nope", device="cpu")
    with pytest.raises(UserError, match="no config.json"):
        load_pretrained_model(tmp_path, device="cpu")
    llama = tmp_path / "llama"
    shutil.copytree(tiny_checkpoint, llama)
    config = json.loads((llama / "config.json").read_text())
    (llama / "config.json").write_text(json.dumps(dict(config, model_type="llama")))
    with pytest.raises(UserError, match="not an Xmodel-VLM checkpoint"):
        load_pretrained_model(llama, device="cpu")
    partial = tmp_path / "partial"
    shutil.copytree(tiny_checkpoint, partial)
    state = load_file(partial / "model.safetensors")
    save_file({k: v for k, v in state.items() if "mm_projector" not in k}, partial / "model.safetensors")
    with pytest.raises(UserError, match="lacks 4 weights"):
        load_pretrained_model(partial, device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
@pytest.mark.parametrize("flag", ["load_8bit", "load_4bit"])
def test_quantized_loading_needs_cuda(tiny_checkpoint, flag):
    with pytest.raises(UserError, match="needs a CUDA GPU"):
        load_pretrained_model(tiny_checkpoint, device="cpu", **{flag: True})
