"""Flag parsing: the seed's launch lines, transformers-5 renames, and one-line errors for bad input."""
from __future__ import annotations

import subprocess
import sys

import pytest

from xmodelvlm.errors import UserError
from xmodelvlm.train.arguments import parse_arguments, rewrite_legacy_flags

from train_helpers import REPO, train_env

KNOWN = {"eval_strategy", "warmup_steps", "train_sampling_strategy", "use_cpu", "activation_checkpointing",
         "per_device_train_batch_size"}


def base_argv(assets, tmp_path) -> list[str]:
    return ["--model_name_or_path", str(assets["lm"]), "--vision_tower", str(assets["clip"]),
            "--data_path", str(assets["pretrain"]), "--output_dir", str(tmp_path / "out"), "--use_cpu", "True"]


def test_legacy_flags_are_rewritten():
    argv = ["--evaluation_strategy", "no", "--warmup_ratio", "0.03", "--group_by_length", "True",
            "--no_cuda", "--gradient_checkpointing", "True", "--save_safetensors", "True", "--per_gpu_train_batch_size=4",
            "--learning_rate", "2e-5"]
    out, notes = rewrite_legacy_flags(argv, KNOWN)
    assert out == ["--eval_strategy", "no", "--warmup_steps", "0.03", "--train_sampling_strategy", "group_by_length",
                   "--use_cpu", "--activation_checkpointing", "True", "--per_device_train_batch_size", "4",
                   "--learning_rate", "2e-5"]
    assert any("save_safetensors" in note and "dropped" in note for note in notes)


def test_legacy_flags_kept_when_transformers_still_knows_them():
    out, _ = rewrite_legacy_flags(["--gradient_checkpointing", "True"], KNOWN | {"gradient_checkpointing"})
    assert out == ["--gradient_checkpointing", "True"]
    out, _ = rewrite_legacy_flags(["--group_by_length", "False", "--seed", "1"], KNOWN)
    assert out == ["--seed", "1"]


@pytest.mark.parametrize("ratio", ["1.0", "-0.1", "abc"])
def test_bad_warmup_ratio(ratio):
    with pytest.raises(UserError, match="warmup_ratio"):
        rewrite_legacy_flags(["--warmup_ratio", ratio], KNOWN)


def test_seed_launch_line_parses(train_assets, tmp_path):
    """The seed's pretrain.sh flags (transformers-4.37 names included) give the intended settings."""
    argv = base_argv(train_assets, tmp_path) + [
        "--version", "plain", "--image_folder", str(train_assets["images"]), "--vision_tower_type", "clip",
        "--mm_projector_type", "xdpnet", "--tune_mm_mlp_adapter", "True", "--mm_projector_lr", "1e-3",
        "--mm_vision_select_layer", "-2", "--mm_use_im_start_end", "False", "--mm_use_im_patch_token", "False",
        "--num_train_epochs", "1", "--per_device_train_batch_size", "16", "--gradient_accumulation_steps", "1",
        "--evaluation_strategy", "no", "--save_strategy", "steps", "--save_steps", "24000", "--save_total_limit", "1",
        "--learning_rate", "2e-5", "--weight_decay", "0.", "--warmup_ratio", "0.03", "--lr_scheduler_type", "cosine",
        "--logging_steps", "1", "--model_max_length", "2048", "--gradient_checkpointing", "True",
        "--dataloader_num_workers", "4", "--lazy_preprocess", "True", "--report_to", "tensorboard",
        "--logging_dir", str(tmp_path / "runs"), "--lora_enable", "False", "--bits", "16", "--group_by_length", "False",
        "--cache_dir", str(tmp_path), "--freeze_backbone", "False"]
    model_args, data_args, args = parse_arguments(argv)
    assert model_args.version == "plain" and model_args.tune_mm_mlp_adapter and model_args.mm_projector_type == "xdpnet"
    assert data_args.data_path == [str(train_assets["pretrain"])] and data_args.image_aspect_ratio == "pad"
    assert args.eval_strategy == "no" and args.warmup_steps == pytest.approx(0.03)
    assert args.get_warmup_steps(1000) == 30
    assert args.mm_projector_lr == 1e-3 and args.model_max_length == 2048
    assert args.gradient_checkpointing or getattr(args, "activation_checkpointing", False)
    assert args.train_sampling_strategy == "random"
    assert args.remove_unused_columns is False


@pytest.mark.parametrize("extra, message", [
    (["--mm_use_im_start_end", "True"], "not supported"),
    (["--mm_use_im_patch_token", "True"], "not supported"),
    (["--version", "llava_llama_2"], "--version"),
    (["--bits", "4"], "lora_enable"),
    (["--bits", "5"], "--bits"),
    (["--lora_enable", "True", "--tune_mm_mlp_adapter", "True"], "tune_mm_mlp_adapter"),
    (["--pretrain_mm_mlp_adapter", "/nonexistent/mm_projector.bin"], "file not found"),
    (["--group_by_modality_length", "True", "--group_by_length", "True"], "group_by_modality_length"),
    (["--bogus_flag", "1"], "unknown argument"),
    (["--lora_r", "abc"], "lora_r"),
    (["--vision_tower_type", "siglip"], "only clip"),
    (["--length_group_steps", "0"], "--length_group_steps"),
    (["--length_group_steps", "16"], "only acts on grouped sampling"),
])
def test_bad_arguments_raise_one_line(train_assets, tmp_path, extra, message):
    with pytest.raises(UserError, match=message) as info:
        parse_arguments(base_argv(train_assets, tmp_path) + extra)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("grouping", [["--group_by_modality_length", "True"], ["--group_by_length", "True"]])
def test_length_group_steps_with_grouped_sampling(train_assets, tmp_path, grouping):
    _, _, args = parse_arguments(base_argv(train_assets, tmp_path) + grouping + ["--length_group_steps", "16"])
    assert args.length_group_steps == 16


def test_missing_model_dir(train_assets, tmp_path):
    argv = base_argv(train_assets, tmp_path)
    argv[1] = str(tmp_path / "nope")
    with pytest.raises(UserError, match="model_name_or_path"):
        parse_arguments(argv)


@pytest.mark.slow
def test_cli_exit_code_2(train_assets, tmp_path):
    """Bad flags through the real entry points: one `error:` line on stderr, exit 2, no traceback."""
    for entry in (["train.py"], ["-m", "xmodelvlm.train"]):
        proc = subprocess.run([sys.executable, *entry, *base_argv(train_assets, tmp_path), "--no_such_flag", "1"],
                              cwd=REPO, env=train_env(), capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr[-2000:]
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "--no_such_flag" in errors[0]
        assert "Traceback" not in proc.stderr


def test_qlora_refuses_zero3(train_assets, tmp_path, monkeypatch):
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "false")   # TrainingArguments sets it; undone after the test
    try:
        with pytest.raises(UserError, match="ZeRO-3"):
            parse_arguments(base_argv(train_assets, tmp_path) + [
                "--lora_enable", "True", "--bits", "4",
                "--deepspeed", str(REPO / "scripts" / "deepspeed" / "zero3.json")])
    finally:
        unset_hf_deepspeed_config()
