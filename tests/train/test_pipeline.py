"""End to end through train.py on tiny models (CPU): stage 1 → stage 2, LoRA → merge, resume, DeepSpeed ZeRO-2/3
and plain DDP in one and two processes (gloo), and the launch scripts."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from train_helpers import (REPO, free_port, logged_losses, run_train, stage1_args, stage2_args, train_env)

pytestmark = pytest.mark.slow

ZERO2 = REPO / "scripts" / "deepspeed" / "zero2.json"
ZERO3 = REPO / "scripts" / "deepspeed" / "zero3.json"


def load_and_generate(model_dir: Path, image: Path):
    from xmodelvlm import get_conv_template, load_image, load_pretrained_model, process_images, tokenizer_image_token

    tokenizer, model, image_processor, context_len = load_pretrained_model(str(model_dir), device="cpu",
                                                                           dtype="float32")
    conv = get_conv_template("v1")
    conv.append_message(conv.roles[0], "<image>\nWhat color is the shape?")
    conv.append_message(conv.roles[1], None)
    input_ids = tokenizer_image_token(conv.get_prompt(), tokenizer, return_tensors="pt")[None]
    pixels = process_images([load_image(image)], image_processor, model.config)
    output = model.generate(input_ids, images=pixels, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert output.shape[1] == input_ids.shape[1] + 3
    return model, context_len


def tensorboard_tags(log_dir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for event_file in log_dir.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(event_file.parent))
        accumulator.Reload()
        tags.update(accumulator.Tags()["scalars"])
    return tags


def test_stage1_then_stage2(train_assets, tmp_path):
    stage1, stage2, runs = tmp_path / "stage1", tmp_path / "stage2", tmp_path / "runs"
    run_train(stage1_args(train_assets, stage1, "--num_train_epochs", "2", "--save_strategy", "steps",
                          "--save_steps", "4", "--gradient_checkpointing", "True", "--report_to", "tensorboard",
                          "--logging_dir", runs))
    losses = list(logged_losses(stage1).values())
    assert len(losses) == 8 and sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.5, losses
    for folder in (stage1, stage1 / "checkpoint-4"):
        projector = torch.load(folder / "mm_projector.bin", weights_only=True)
        assert set(projector) == {f"model.mm_projector.mlp.{i}.{w}" for i in (0, 2) for w in ("weight", "bias")}
        config = json.loads((folder / "config.json").read_text())
        assert config["model_type"] == "xmodelvlm" and config["mm_projector_type"] == "xdpnetv10_4"
    assert not (stage1 / "model.safetensors").exists()        # stage 1 saves the projector, not the frozen rest
    assert {"train/loss", "train/learning_rate", "train/grad_norm", "train/samples_per_second",
            "train/tokens_per_second"} <= tensorboard_tags(runs)

    proc = run_train(stage2_args(train_assets, stage2, "--pretrain_mm_mlp_adapter", stage1 / "mm_projector.bin",
                                 "--num_train_epochs", "2", "--gradient_checkpointing", "True",
                                 "--save_strategy", "no"))
    assert f"loaded the projector (4 tensors) from {stage1 / 'mm_projector.bin'}" in proc.stderr
    losses = list(logged_losses(stage2).values())
    assert sum(losses[-3:]) / 3 < sum(losses[:2]) / 2 - 2.0, losses
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer_config.json",
                 "preprocessor_config.json"):
        assert (stage2 / name).is_file(), name
    config = json.loads((stage2 / "config.json").read_text())
    assert config["model_type"] == "xmodelvlm" and config["use_cache"] and config["vision_config"]
    assert json.loads((stage2 / "tokenizer_config.json").read_text())["tokenizer_class"] == "XmodelTokenizer"

    model, context_len = load_and_generate(stage2, train_assets["images"] / "000.png")
    assert context_len == 128
    from safetensors.torch import load_file
    lm = load_file(train_assets["lm"] / "model.safetensors")
    state = model.state_dict()
    # Gradient checkpointing with a trainable LM: the decoder layers did learn.
    assert not torch.equal(state["model.layers.0.self_attn.q_proj.weight"], lm["model.layers.0.self_attn.q_proj.weight"])
    clip = load_file(train_assets["clip"] / "model.safetensors")
    assert torch.equal(model.get_vision_tower().clip.embeddings.patch_embedding.weight,
                       clip["vision_model.embeddings.patch_embedding.weight"])   # the tower stayed frozen


def test_lora_resume_and_merge(train_assets, tmp_path):
    """LoRA with modality grouping and gradient accumulation: 4 steps straight == 2 steps, stop, resume; then
    merge → load_pretrained_model gives the adapted model's logits."""
    straight, resumed, merged = tmp_path / "straight", tmp_path / "resumed", tmp_path / "merged"
    common = ["--lora_enable", "True", "--lora_r", "8", "--lora_alpha", "16", "--lora_dropout", "0.0",
              "--mm_projector_lr", "1e-3", "--max_steps", "4", "--per_device_train_batch_size", "2",
              "--gradient_accumulation_steps", "2"]
    run_train(stage2_args(train_assets, straight, *common, "--save_strategy", "no"))
    interrupted = stage2_args(train_assets, resumed, *common, "--save_strategy", "steps", "--save_steps", "100",
                              "--stop_after_steps", "2")
    first = run_train(interrupted)
    assert "stopped at step 2 of 4" in first.stderr
    checkpoint = resumed / "checkpoint-2"
    for name in ("adapter_model.safetensors", "adapter_config.json", "non_lora_trainables.bin", "optimizer.pt",
                 "trainer_state.json", "rng_state.pth"):
        assert (checkpoint / name).is_file(), name
    second = run_train(interrupted)                        # the same command again resumes and finishes
    assert "resuming from" in second.stderr and "checkpoint-2" in second.stderr
    expected, got = logged_losses(straight), logged_losses(resumed)
    assert sorted(got) == [1, 2, 3, 4]
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-4)

    from safetensors.torch import load_file
    a, b = load_file(straight / "adapter_model.safetensors"), load_file(resumed / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert any(v.abs().sum() > 0 for k, v in a.items() if "lora_B" in k)     # the adapters did train
    non_lora = torch.load(straight / "non_lora_trainables.bin", weights_only=True)
    assert set(non_lora) == {f"model.mm_projector.mlp.{i}.{w}" for i in (0, 2) for w in ("weight", "bias")}

    proc = subprocess.run([os.sys.executable, str(REPO / "scripts" / "merge_lora.py"), "--model-path", str(straight),
                           "--model-base", str(train_assets["lm"]), "--save-path", str(merged)],
                          cwd=REPO, env=train_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # Reference: base + non-LoRA trainables + adapter, unmerged.
    from peft import PeftModel

    from xmodelvlm.model.checkpoint import load_config
    from xmodelvlm.model.modeling import XmodelVLMForCausalLM
    from xmodelvlm.train.lora import load_non_lora_trainables
    base = XmodelVLMForCausalLM.from_pretrained(train_assets["lm"], config=load_config(straight),
                                                dtype=torch.float32)
    load_non_lora_trainables(base, straight / "non_lora_trainables.bin")
    reference = PeftModel.from_pretrained(base, straight).eval()
    model, _ = load_and_generate(merged, train_assets["images"] / "001.png")
    input_ids = torch.tensor([[1, 319, 2654, -200, 338, 263]])
    pixels = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        want = reference(input_ids=input_ids, images=pixels).logits
        have = model(input_ids=input_ids, images=pixels).logits
    assert torch.allclose(want, have, atol=1e-4), (want - have).abs().max()


def script_env(assets, **extra) -> dict:
    return train_env(LM_PATH=str(assets["lm"]), VISION_TOWER=str(assets["clip"]), DEVICE="cpu", NUM_WORKERS="0",
                     MASTER_PORT=str(free_port()), **{k: str(v) for k, v in extra.items()})


def run_script(script: str, args: list, env: dict, timeout: int = 240) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", str(REPO / "scripts" / script), *[str(a) for a in args]], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{script} {args} failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
    return proc


def test_scripts_report_missing_paths(train_assets, tmp_path):
    env = script_env(train_assets, PRETRAIN_DATA=train_assets["pretrain"], PRETRAIN_IMAGES=tmp_path / "nope")
    proc = subprocess.run(["bash", str(REPO / "scripts" / "pretrain.sh"), "0"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: PRETRAIN_IMAGES={tmp_path / 'nope'}: directory not found (set PRETRAIN_IMAGES=/path/to/it)"]
    env = script_env(train_assets, GLOBAL_BATCH=32, PROJECTOR_PATH=tmp_path / "none.bin")
    proc = subprocess.run(["bash", str(REPO / "scripts" / "finetune.sh"), "0"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "PROJECTOR_PATH" in proc.stderr
    env = script_env(train_assets, GLOBAL_BATCH=64, PRETRAIN_DATA=train_assets["pretrain"],
                     PRETRAIN_IMAGES=train_assets["images"])
    proc = subprocess.run(["bash", str(REPO / "scripts" / "pretrain.sh"), "0,1,2"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "not divisible by 3" in proc.stderr


STAGE1_SMOKE = ["--max_steps", "4", "--save_steps", "2", "--model_max_length", "64", "--report_to", "none",
                "--disable_tqdm", "True", "--learning_rate", "1e-2", "--mm_projector_lr", "1e-2", "--seed", "5"]


def test_deepspeed_zero2_one_and_two_processes(train_assets, tmp_path):
    """pretrain.sh under ZeRO-2: one process (batch 2 × accumulation 2), interrupted after 2 steps and resumed, logs
    the same losses as two processes over gloo (batch 2 each) running straight through."""
    one, two = tmp_path / "one", tmp_path / "two"
    env = dict(PRETRAIN_DATA=train_assets["pretrain"], PRETRAIN_IMAGES=train_assets["images"], GLOBAL_BATCH=4,
               PER_DEVICE_BATCH=2)
    runs = [run_script("pretrain.sh", ["0", *STAGE1_SMOKE, "--stop_after_steps", "2"],
                       script_env(train_assets, LAUNCHER="python", OUTPUT_DIR=one, **env))
            for _ in range(2)]   # the same command twice: stop after 2 steps, then resume and finish
    assert "stopped at step 2 of 4" in runs[0].stderr
    assert f"resuming from {one / 'checkpoint-2'}" in runs[1].stderr
    assert (one / "checkpoint-4" / "global_step4").is_dir()          # a DeepSpeed checkpoint (save_total_limit 1)
    proc = run_script("pretrain.sh", ["0,1", *STAGE1_SMOKE], script_env(train_assets, OUTPUT_DIR=two, **env))
    assert "--num_gpus 2" in proc.stderr
    losses_one, losses_two = logged_losses(one), logged_losses(two)
    assert sorted(losses_one) == [1, 2, 3, 4]
    assert losses_one == pytest.approx(losses_two, rel=1e-3)
    a = torch.load(one / "mm_projector.bin", weights_only=True)
    b = torch.load(two / "mm_projector.bin", weights_only=True)
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)


def test_deepspeed_zero3_one_and_two_processes(train_assets, tmp_path):
    """Stage 1 under ZeRO-3 saves a whole (gathered) projector; stage 2 (finetune.sh, ZeRO-3) loads it — with the
    projector frozen the saved checkpoint holds exactly those weights — and one process equals two."""
    stage1, one, two = tmp_path / "stage1", tmp_path / "one", tmp_path / "two"
    run_train(stage1_args(train_assets, stage1, "--deepspeed", ZERO3, "--max_steps", "1"))
    projector = torch.load(stage1 / "mm_projector.bin", weights_only=True)
    assert projector["model.mm_projector.mlp.0.weight"].shape == (64, 256)   # gathered, not an empty shard

    smoke = ["--max_steps", "3", "--save_strategy", "no", "--learning_rate", "3e-3", "--model_max_length", "128",
             "--report_to", "none", "--disable_tqdm", "True", "--freeze_mm_mlp_adapter", "True", "--seed", "5"]
    env = dict(PROJECTOR_PATH=stage1 / "mm_projector.bin", FINETUNE_DATA=train_assets["instruct"],
               FINETUNE_IMAGES=train_assets["images"], GLOBAL_BATCH=4, PER_DEVICE_BATCH=4)
    run_script("finetune.sh", ["0", *smoke], script_env(train_assets, LAUNCHER="python", OUTPUT_DIR=one, **env))
    run_script("finetune.sh", ["0,1", *smoke], script_env(train_assets, OUTPUT_DIR=two, **env))
    assert logged_losses(one) == pytest.approx(logged_losses(two), rel=1e-3)

    from safetensors.torch import load_file
    saved = load_file(one / "model.safetensors")
    for name, tensor in projector.items():
        assert torch.equal(saved[name], tensor), name
    load_and_generate(two, train_assets["images"] / "002.png")


def test_plain_ddp_two_processes_equal_one(train_assets, tmp_path):
    """finetune.sh without DeepSpeed under torchrun (DDP over gloo; the demo's `--set train_processes=2`), with length-grouped
    batches: two processes with half the batch each log the same losses and end with the same weights as one."""
    stage1, one, two = tmp_path / "stage1", tmp_path / "one", tmp_path / "two"
    run_train(stage1_args(train_assets, stage1, "--max_steps", "1"))
    smoke = ["--max_steps", "3", "--save_strategy", "no", "--learning_rate", "3e-3", "--model_max_length", "128",
             "--report_to", "none", "--disable_tqdm", "True", "--seed", "5", "--gradient_checkpointing", "False",
             "--length_group_steps", "2"]
    env = dict(PROJECTOR_PATH=stage1 / "mm_projector.bin", FINETUNE_DATA=train_assets["instruct"],
               FINETUNE_IMAGES=train_assets["images"], GLOBAL_BATCH=4, PER_DEVICE_BATCH=4, DEEPSPEED_CONFIG="none")
    run_script("finetune.sh", ["0", *smoke], script_env(train_assets, LAUNCHER="python", OUTPUT_DIR=one, **env))
    proc = run_script("finetune.sh", ["0,1", *smoke],
                      script_env(train_assets, LAUNCHER="torchrun", OUTPUT_DIR=two, **env))
    assert "2 process(es) × batch 2" in proc.stderr and "--nproc_per_node 2" in proc.stderr
    losses = logged_losses(one)
    assert sorted(losses) == [1, 2, 3] and losses == pytest.approx(logged_losses(two), rel=1e-4)

    from safetensors.torch import load_file
    a, b = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
