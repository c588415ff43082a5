"""Starting points, freezing, projector I/O, LoRA targets and the projector's optimizer group (in process)."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from xmodelvlm.errors import UserError
from xmodelvlm.train.arguments import parse_arguments
from xmodelvlm.train.model_setup import build_model, load_projector_weights, projector_state_dict


def args_for(assets, tmp_path, *extra, data="instruct"):
    return parse_arguments(["--model_name_or_path", str(assets["lm"]), "--vision_tower", str(assets["clip"]),
                            "--data_path", str(assets[data]), "--image_folder", str(assets["images"]),
                            "--output_dir", str(tmp_path / "out"), "--use_cpu", "True", "--report_to", "none",
                            *[str(e) for e in extra]])


def test_xmodel_lm_becomes_a_vlm(train_assets, tmp_path):
    model, tokenizer, image_processor = build_model(*args_for(train_assets, tmp_path))
    lm = load_file(train_assets["lm"] / "model.safetensors")
    state = model.state_dict()
    for name, tensor in lm.items():
        assert torch.equal(state[name], tensor), name
    clip = load_file(train_assets["clip"] / "model.safetensors")
    tower = {k.removeprefix("vision_model."): v for k, v in clip.items() if k.startswith("vision_model.")}
    for name, tensor in model.get_vision_tower().clip.state_dict().items():
        assert torch.equal(tensor, tower[name]), name
    assert model.config.model_type == "xmodelvlm" and model.config.vision_config["image_size"] == 28
    assert model.config.mm_projector_type == "xdpnetv10_4" and model.num_image_tokens == 4
    assert tokenizer.pad_token_id == 0 and tokenizer.padding_side == "right"
    assert image_processor.crop_size["height"] == 28


def test_llama_checkpoint_is_accepted(train_assets, tmp_path):
    lm = tmp_path / "llama"
    shutil.copytree(train_assets["lm"], lm)
    config = json.loads((lm / "config.json").read_text())
    config.update(model_type="llama", architectures=["LlamaForCausalLM"], rope_theta=10000.0)
    del config["auto_map"]
    (lm / "config.json").write_text(json.dumps(config))
    model_args, data_args, args = args_for(train_assets, tmp_path)
    model_args.model_name_or_path = str(lm)
    model, _, _ = build_model(model_args, data_args, args)
    assert model.config.num_hidden_layers == config["num_hidden_layers"]


def test_missing_lm_weights_is_a_clear_error(train_assets, tmp_path):
    lm = tmp_path / "broken"
    shutil.copytree(train_assets["lm"], lm)
    state = load_file(lm / "model.safetensors")
    del state["model.layers.1.mlp.up_proj.weight"]
    save_file(state, lm / "model.safetensors", metadata={"format": "pt"})
    model_args, data_args, args = args_for(train_assets, tmp_path)
    model_args.model_name_or_path = str(lm)
    with pytest.raises(UserError, match="model.layers.1.mlp.up_proj.weight"):
        build_model(model_args, data_args, args)


def test_lm_without_vision_tower_or_unknown_type(train_assets, tmp_path):
    model_args, data_args, args = args_for(train_assets, tmp_path)
    model_args.vision_tower = None
    with pytest.raises(UserError, match="--vision_tower"):
        build_model(model_args, data_args, args)
    odd = tmp_path / "odd"
    shutil.copytree(train_assets["lm"], odd)
    (odd / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    model_args.model_name_or_path, model_args.vision_tower = str(odd), str(train_assets["clip"])
    with pytest.raises(UserError, match="gpt2"):
        build_model(model_args, data_args, args)


def test_trainable_parameters_per_stage(train_assets, tmp_path):
    def trainable(*extra, data="instruct"):
        model, _, _ = build_model(*args_for(train_assets, tmp_path, *extra, data=data))
        parts = set()
        for name, p in model.named_parameters():
            if p.requires_grad:
                parts.add("tower" if "vision_tower." in name else "projector" if "mm_projector." in name else
                          "lora" if "lora_" in name else "lm")
        return parts, model

    assert trainable("--tune_mm_mlp_adapter", "True", "--version", "plain", data="pretrain")[0] == {"projector"}
    assert trainable()[0] == {"projector", "lm"}
    assert trainable("--freeze_backbone", "True")[0] == {"projector"}
    assert trainable("--freeze_mm_mlp_adapter", "True")[0] == {"lm"}
    parts, model = trainable("--lora_enable", "True", "--lora_r", "4", "--lora_bias", "all")
    assert parts == {"projector", "lora"}
    lora_modules = {n for n, _ in model.named_modules() if n.endswith("lora_A")}
    assert lora_modules and all(".layers." in n and "vision_tower" not in n and "mm_projector" not in n
                                for n in lora_modules)
    assert len(lora_modules) == 7 * model.config.num_hidden_layers   # q k v o gate up down in every layer


def test_projector_weights_round_trip(train_assets, tmp_path):
    model, _, _ = build_model(*args_for(train_assets, tmp_path))
    state = projector_state_dict(model)
    assert set(state) == {"model.mm_projector.mlp.0.weight", "model.mm_projector.mlp.0.bias",
                          "model.mm_projector.mlp.2.weight", "model.mm_projector.mlp.2.bias"}
    new = {k: torch.randn_like(v) for k, v in state.items()}
    torch.save(new, tmp_path / "mm_projector.bin")
    load_projector_weights(model, tmp_path / "mm_projector.bin")
    assert all(torch.equal(projector_state_dict(model)[k], v) for k, v in new.items())
    torch.save({"model.mm_projector.0.weight": torch.zeros(2, 2)}, tmp_path / "wrong.bin")
    with pytest.raises(UserError, match="does not fit"):
        load_projector_weights(model, tmp_path / "wrong.bin")
    (tmp_path / "garbage.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read"):
        load_projector_weights(model, tmp_path / "garbage.bin")


def test_projector_type_mismatch_with_stage1_config(train_assets, tmp_path):
    stage1 = tmp_path / "stage1"
    stage1.mkdir()
    torch.save({"model.mm_projector.0.weight": torch.zeros(1)}, stage1 / "mm_projector.bin")
    (stage1 / "config.json").write_text(json.dumps({"mm_projector_type": "mlp2x_gelu"}))
    with pytest.raises(UserError, match="mlp2x_gelu"):
        build_model(*args_for(train_assets, tmp_path, "--pretrain_mm_mlp_adapter", stage1 / "mm_projector.bin",
                              "--mm_projector_type", "xdpnetv10_4"))


def test_projector_lr_group(train_assets, tmp_path):
    from xmodelvlm.data.dataset import make_supervised_data_module
    from xmodelvlm.train.trainer import XmodelVLMTrainer

    model_args, data_args, args = args_for(train_assets, tmp_path, "--mm_projector_lr", "1e-3", "--learning_rate",
                                           "2e-5", "--weight_decay", "0.1", "--group_by_modality_length", "True",
                                           "--per_device_train_batch_size", "3")
    model, tokenizer, image_processor = build_model(model_args, data_args, args)
    data = make_supervised_data_module(tokenizer, image_processor, data_args, version="v1",
                                       num_image_tokens=model.num_image_tokens, model_max_length=128)
    trainer = XmodelVLMTrainer(model=model, args=args, processing_class=tokenizer, image_processor=image_processor,
                               **data)
    optimizer = trainer.create_optimizer()
    names = {id(p): n for n, p in model.named_parameters()}
    seen = set()
    for group in optimizer.param_groups:
        group_names = [names[id(p)] for p in group["params"]]
        seen.update(group_names)
        is_projector = {"mm_projector." in n for n in group_names}
        assert len(is_projector) == 1                                   # groups never mix projector and LM
        assert group["lr"] == (1e-3 if is_projector.pop() else 2e-5)
        for n in group_names:                                           # HF's rule: no decay on biases / norms
            no_decay = n.endswith(".bias") or "norm" in n
            assert group["weight_decay"] == (0.0 if no_decay else 0.1), n
    assert seen == {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any("vision_tower." in n for n in seen)

    # The real dataloader under group_by_modality_length: every batch is all-image or all-text (but one).
    mixed = 0
    for batch in trainer.get_train_dataloader():
        with_image = (batch["input_ids"] == -200).any(dim=1)
        mixed += int(with_image.any() and not with_image.all())
    assert mixed <= 1


def test_continue_from_vlm_checkpoint(train_assets, tmp_path):
    """A full Xmodel-VLM checkpoint (released layout: tower weights inside, no tower config) continues training."""
    model_args, data_args, args = args_for(train_assets, tmp_path)
    model_args.model_name_or_path, model_args.vision_tower = str(train_assets["vlm"]), None
    model, _, image_processor = build_model(model_args, data_args, args)
    stored = load_file(train_assets["vlm"] / "model.safetensors")
    state = model.state_dict()
    for name in ("model.mm_projector.mlp.0.weight", "lm_head.weight", "model.layers.1.mlp.down_proj.weight",
                 "model.vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight"):
        assert torch.equal(state[name], stored[name]), name
    assert image_processor.crop_size["height"] == 28
    model_args.mm_projector_type = "mlp2x_gelu"
    with pytest.raises(UserError, match="does not match the checkpoint"):
        build_model(model_args, data_args, args)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_qlora_needs_cuda(train_assets, tmp_path):
    with pytest.raises(UserError, match="CUDA"):
        build_model(*args_for(train_assets, tmp_path, "--lora_enable", "True", "--bits", "4"))


def test_throughput_counts_non_padding_and_image_tokens(train_assets, tmp_path):
    from xmodelvlm.data.dataset import make_supervised_data_module
    from xmodelvlm.train.trainer import XmodelVLMTrainer

    model_args, data_args, args = args_for(train_assets, tmp_path, "--per_device_train_batch_size", "5")
    model, tokenizer, image_processor = build_model(model_args, data_args, args)
    data = make_supervised_data_module(tokenizer, image_processor, data_args, version="v1",
                                       num_image_tokens=model.num_image_tokens, model_max_length=128)
    trainer = XmodelVLMTrainer(model=model, args=args, processing_class=tokenizer, image_processor=image_processor,
                               **data)
    batch = data["data_collator"]([data["train_dataset"][i] for i in (0, 1, 16, 17, 18)])   # 2 images, 3 text
    assert batch["attention_mask"].min() == 0                                              # padding present
    model.train()
    trainer.compute_loss(model, batch)
    expected = int(batch["attention_mask"].sum()) + 2 * (model.num_image_tokens - 1)
    assert trainer._interval_samples == 5 and int(trainer._interval_tokens) == expected
    logs = {"loss": 1.0}
    trainer.log(logs)
    assert logs["tokens_per_second"] / logs["samples_per_second"] == pytest.approx(expected / 5, rel=1e-2)
