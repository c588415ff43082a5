"""Command-line arguments of `train.py`: the seed's flag names, transformers 5's `TrainingArguments`, and a
rewrite of the flags transformers 5 dropped so the seed's (LLaVA-era) launch lines keep working.

    model_args, data_args, training_args = parse_arguments(argv)

Flags are parsed by `HfArgumentParser` over `ModelArguments`, the data side's `DataArguments` and our
`TrainingArguments` (transformers' plus the seed's extra fields). Before parsing, `rewrite_legacy_flags` maps
names transformers 5 removed (`--evaluation_strategy` → `--eval_strategy`, `--warmup_ratio R` → `--warmup_steps R`,
`--group_by_length True` → `--train_sampling_strategy group_by_length`, ...) — only when the installed
transformers lacks the old name, so older releases see the flags unchanged. Unknown flags and bad values raise
`UserError` (one line, exit 2 under `run_cli`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Callable

import transformers
from transformers import HfArgumentParser

from ..data.dataset import DataArguments
from ..errors import UserError

logger = logging.getLogger("xmodelvlm.train")

SUPPORTED_VERSIONS = ("plain", "v1", "vicuna_v1")


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={
        "help": "starting point: an LM-only checkpoint (Xmodel-LM layout, model_type 'xmodel', or any Llama "
                "checkpoint) plus --vision_tower, or a full Xmodel-VLM checkpoint to continue training"})
    version: str = field(default="v1", metadata={
        "help": "prompt template: 'plain' (stage 1, captions) or 'v1' (stage 2, vicuna_v1 conversations)"})
    vision_tower: str | None = field(default=None, metadata={
        "help": "CLIP directory (e.g. openai/clip-vit-large-patch14-336); required when starting from an LM"})
    vision_tower_type: str = field(default="clip", metadata={"help": "only 'clip' is supported"})
    mm_projector_type: str | None = field(default=None, metadata={
        "help": "projector name (xdpnetv10_4 = xdpnet, xdpnetv10_N, linear, mlp2x_gelu, ldpnet, ldpnetv2); default: "
                "the one of --pretrain_mm_mlp_adapter's config.json / the checkpoint, else xdpnetv10_4"})
    mm_vision_select_layer: int | None = field(default=None, metadata={
        "help": "CLIP hidden layer the features come from (default: the checkpoint's, else -2)"})
    mm_vision_select_feature: str | None = field(default=None, metadata={
        "help": "'patch' (drop CLS) or 'cls_patch' (default: the checkpoint's, else patch)"})
    pretrain_mm_mlp_adapter: str | None = field(default=None, metadata={
        "help": "stage 1's mm_projector.bin (keys model.mm_projector.*) to start the projector from"})
    tune_mm_mlp_adapter: bool = field(default=False, metadata={
        "help": "stage 1: train the projector only (vision tower and LM frozen); saves mm_projector.bin"})
    freeze_backbone: bool = field(default=False, metadata={"help": "keep the language model frozen"})
    mm_use_im_start_end: bool = field(default=False, metadata={"help": "unsupported (the released model has none)"})
    mm_use_im_patch_token: bool = field(default=False, metadata={"help": "unsupported (the released model has none)"})
    attn_implementation: str | None = field(default=None, metadata={
        "help": "LM attention kernel: sdpa (default), eager or flash_attention_2"})


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    """transformers' `TrainingArguments` plus the seed's fields (LoRA, projector lr, modality grouping, ...)."""

    model_max_length: int = field(default=2048, metadata={
        "help": "longest training sequence in LM tokens (an image counts as its image tokens); longer samples are "
                "truncated after the image, or skipped if the image would be cut"})
    mm_projector_lr: float | None = field(default=None, metadata={
        "help": "learning rate of the projector's parameter group (default: --learning_rate)"})
    group_by_modality_length: bool = field(default=False, metadata={
        "help": "batches hold only image or only text-only samples, grouped by length (LLaVA-1.5 stage 2)"})
    length_group_steps: int = field(default=1, metadata={
        "help": "with --group_by_modality_length or --group_by_length: sort samples by length across this many "
                "optimizer steps' worth (transformers' own grouping uses 50), so each batch pads less; 1 (default) "
                "groups within one step's samples, as LLaVA does"})
    freeze_mm_mlp_adapter: bool = field(default=False, metadata={"help": "keep the projector frozen"})
    lora_enable: bool = field(default=False, metadata={
        "help": "train LoRA adapters on the LM's linear layers (never the tower or projector) instead of the LM"})
    lora_r: int = field(default=64, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha (scaling = alpha / r)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    lora_bias: str = field(default="none", metadata={"help": "LoRA bias training: none, all or lora_only"})
    bits: int = field(default=16, metadata={
        "help": "16: full precision LM; 4 or 8: QLoRA on a bitsandbytes-quantized LM (needs CUDA and --lora_enable)"})
    double_quant: bool = field(default=True, metadata={"help": "QLoRA: double-quantize the 4-bit statistics"})
    quant_type: str = field(default="nf4", metadata={"help": "QLoRA 4-bit data type: nf4 or fp4"})
    cache_dir: str | None = field(default=None, metadata={"help": "accepted for the seed's scripts; unused"})
    remove_unused_columns: bool = field(default=False, metadata={
        "help": "keep False: the collator's batch keys are the model's inputs"})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "start afresh: delete output_dir's checkpoint-* folders instead of resuming from the newest"})
    logging_dir: str | None = field(default=None, metadata={
        "help": "TensorBoard log folder (default: OUTPUT_DIR/runs/...); sets TENSORBOARD_LOGGING_DIR"})
    stop_after_steps: int | None = field(default=None, metadata={
        "help": "save a checkpoint and exit after this global step, as if interrupted (the schedule still spans "
                "the whole run); rerun the same command to resume. For time-limited jobs."})

    def __post_init__(self):
        if self.ddp_find_unused_parameters is None:
            # Under plain DDP a text-only batch leaves the projector without gradients; DDP must expect that.
            self.ddp_find_unused_parameters = True
        if self.logging_dir:
            # transformers 5 reads the TensorBoard folder from the environment (its `logging_dir` flag is gone).
            os.environ["TENSORBOARD_LOGGING_DIR"] = os.path.abspath(os.path.expanduser(self.logging_dir))
        super().__post_init__()


# ---------------------------------------------------------------------------------------------------------------
# Legacy flag rewriting

_BOOL_WORDS = {"true", "false", "yes", "no", "1", "0", "t", "f", "y", "n"}


def _truthy(value: str | None) -> bool:
    return value is None or value.lower() in ("true", "yes", "1", "t", "y")


@dataclass(frozen=True)
class LegacyFlag:
    """How to rewrite an old flag: `to` (new name) or `drop` with a reason; `is_bool` flags may stand alone."""

    to: str | None = None
    drop: str | None = None
    is_bool: bool = False
    convert: Callable[[str | None], list[str]] | None = None


def _warmup_ratio(value: str | None) -> list[str]:
    try:
        ratio = float(value)
    except (TypeError, ValueError):
        raise UserError(f"--warmup_ratio expects a number in [0, 1), got {value!r}") from None
    if not 0.0 <= ratio < 1.0:
        raise UserError(f"--warmup_ratio must be in [0, 1) (a fraction of the steps), got {value}; "
                        "for a step count use --warmup_steps N")
    return ["--warmup_steps", repr(ratio)]


def _group_by_length(value: str | None) -> list[str]:
    return ["--train_sampling_strategy", "group_by_length"] if _truthy(value) else []


LEGACY_FLAGS: dict[str, LegacyFlag] = {
    "evaluation_strategy": LegacyFlag(to="eval_strategy"),
    "warmup_ratio": LegacyFlag(convert=_warmup_ratio),
    "group_by_length": LegacyFlag(is_bool=True, convert=_group_by_length),
    "no_cuda": LegacyFlag(to="use_cpu", is_bool=True),
    "per_gpu_train_batch_size": LegacyFlag(to="per_device_train_batch_size"),
    "per_gpu_eval_batch_size": LegacyFlag(to="per_device_eval_batch_size"),
    "gradient_checkpointing": LegacyFlag(to="activation_checkpointing", is_bool=True),
    "gradient_checkpointing_kwargs": LegacyFlag(to="activation_checkpointing_kwargs"),
    "push_to_hub_model_id": LegacyFlag(to="hub_model_id"),
    "push_to_hub_token": LegacyFlag(to="hub_token"),
    "save_safetensors": LegacyFlag(is_bool=True, drop="checkpoints are always safetensors"),
    "include_tokens_per_second": LegacyFlag(is_bool=True, drop="tokens/s is always logged"),
    "fp16_backend": LegacyFlag(drop="mixed precision comes from torch.amp / DeepSpeed"),
    "half_precision_backend": LegacyFlag(drop="mixed precision comes from torch.amp / DeepSpeed"),
    "use_mps_device": LegacyFlag(is_bool=True, drop="MPS is picked automatically"),
    "use_ipex": LegacyFlag(is_bool=True, drop="removed from transformers"),
    "push_to_hub_organization": LegacyFlag(drop="pass --hub_model_id ORG/NAME"),
    "mpt_attn_impl": LegacyFlag(drop="MPT models are not used here"),
    "lora_weight_path": LegacyFlag(drop="unused by the seed as well"),
    "image_grid_pinpoints": LegacyFlag(drop="anyres is not used by Xmodel-VLM"),
}


def _split_flag(token: str) -> tuple[str, str | None] | None:
    if not token.startswith("--") or token == "--":
        return None
    name, sep, value = token[2:].partition("=")
    return name.replace("-", "_"), (value if sep else None)


def rewrite_legacy_flags(argv: list[str], known_fields: set[str]) -> tuple[list[str], list[str]]:
    """Map flags transformers 5 removed onto their replacements → (new argv, notes to log).

    A flag is rewritten only when the parser does not know it itself (older transformers keep it)."""
    out: list[str] = []
    notes: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        split = _split_flag(token)
        rule = LEGACY_FLAGS.get(split[0]) if split else None
        if rule is None or split[0] in known_fields or (rule.to and rule.to not in known_fields):
            out.append(token)
            i += 1
            continue
        name, value = split
        consumed = 1
        if value is None and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            if not rule.is_bool or argv[i + 1].lower() in _BOOL_WORDS:
                value, consumed = argv[i + 1], 2
        if value is None and not rule.is_bool:
            raise UserError(f"--{name} expects a value")
        if rule.convert is not None:
            replacement = rule.convert(value)
        elif rule.drop is not None:
            replacement = []
            notes.append(f"--{name} is no longer a transformers flag and was dropped ({rule.drop})")
        else:
            replacement = [f"--{rule.to}"] + ([] if value is None else [value])
        if rule.drop is None:
            notes.append(f"--{name} → {' '.join(replacement) or '(nothing)'} (transformers 5 name)")
        out.extend(replacement)
        i += consumed
    return out, notes


# ---------------------------------------------------------------------------------------------------------------
# Parsing


class _Parser(HfArgumentParser):
    """argparse errors become `UserError` (one line) instead of usage + exit."""

    def error(self, message):  # noqa: D401 - argparse API
        raise UserError(f"{message} (see python train.py --help)")


def _known_fields() -> set[str]:
    return {f.name for cls in (ModelArguments, DataArguments, TrainingArguments) for f in dataclasses.fields(cls)}


def parse_arguments(argv: list[str] | None = None):
    """argv → (ModelArguments, DataArguments, TrainingArguments), validated; `UserError` on any problem."""
    argv = list(sys.argv[1:] if argv is None else argv)
    argv, notes = rewrite_legacy_flags(argv, _known_fields())
    parser = _Parser((ModelArguments, DataArguments, TrainingArguments))
    try:
        model_args, data_args, training_args, rest = parser.parse_args_into_dataclasses(
            args=argv, return_remaining_strings=True)
    except UserError:
        raise
    except (ValueError, TypeError, FileNotFoundError) as exc:
        raise UserError(f"bad training arguments: {' '.join(str(exc).split())}") from None
    if rest:
        raise UserError(f"unknown argument(s): {' '.join(rest)} (see python train.py --help)")
    for note in notes:
        logger.warning(note)
    validate_arguments(model_args, data_args, training_args)
    return model_args, data_args, training_args


def _zero_stage(deepspeed_config) -> int | None:
    """The ZeRO stage of a --deepspeed value (a JSON path or an already-parsed dict), if readable."""
    if not deepspeed_config:
        return None
    config = deepspeed_config
    if isinstance(config, str):
        try:
            with open(config, encoding="utf-8") as f:
                config = json.load(f)
        except (OSError, ValueError):
            return None
    stage = config.get("zero_optimization", {}).get("stage") if isinstance(config, dict) else None
    return stage if isinstance(stage, int) else None


def validate_arguments(model_args: ModelArguments, data_args: DataArguments, args: TrainingArguments) -> None:
    if model_args.mm_use_im_start_end or model_args.mm_use_im_patch_token:
        raise UserError("--mm_use_im_start_end / --mm_use_im_patch_token are not supported: Xmodel-VLM uses one "
                        "<image> placeholder per image without start/end or patch tokens; drop the flags or set False")
    if model_args.version not in SUPPORTED_VERSIONS:
        raise UserError(f"--version {model_args.version!r} is not supported; use plain (stage 1) or v1 (stage 2)")
    if model_args.vision_tower_type != "clip":
        raise UserError(f"--vision_tower_type {model_args.vision_tower_type!r} is not supported; only clip is")
    if model_args.mm_vision_select_feature not in (None, "patch", "cls_patch"):
        raise UserError(f"--mm_vision_select_feature must be patch or cls_patch, "
                        f"got {model_args.mm_vision_select_feature!r}")
    if args.bits not in (4, 8, 16):
        raise UserError(f"--bits must be 4, 8 or 16, got {args.bits}")
    if args.bits in (4, 8) and not args.lora_enable:
        raise UserError(f"--bits {args.bits} quantizes the LM, which can then only be trained through LoRA; "
                        "add --lora_enable True (QLoRA) or use --bits 16")
    if args.bits in (4, 8) and _zero_stage(args.deepspeed) == 3:
        raise UserError(f"--bits {args.bits} (QLoRA) does not work with ZeRO-3 (quantized weights cannot be "
                        "partitioned); use scripts/deepspeed/zero2.json or no DeepSpeed")
    if args.lora_enable and model_args.tune_mm_mlp_adapter:
        raise UserError("--lora_enable trains the LM through adapters; it does not combine with "
                        "--tune_mm_mlp_adapter (stage 1 trains the projector only)")
    if args.lora_enable and model_args.freeze_backbone:
        raise UserError("--lora_enable with --freeze_backbone would train nothing in the LM; drop one of them")
    if args.lora_bias not in ("none", "all", "lora_only"):
        raise UserError(f"--lora_bias must be none, all or lora_only, got {args.lora_bias!r}")
    if args.quant_type not in ("nf4", "fp4"):
        raise UserError(f"--quant_type must be nf4 or fp4, got {args.quant_type!r}")
    if args.lora_enable and (args.lora_r <= 0 or args.lora_alpha <= 0 or not 0.0 <= args.lora_dropout < 1.0):
        raise UserError("LoRA needs --lora_r > 0, --lora_alpha > 0 and 0 <= --lora_dropout < 1")
    if args.model_max_length <= 0:
        raise UserError(f"--model_max_length must be positive, got {args.model_max_length}")
    if args.mm_projector_lr is not None and args.mm_projector_lr < 0:
        raise UserError(f"--mm_projector_lr must be >= 0, got {args.mm_projector_lr}")
    if args.stop_after_steps is not None and args.stop_after_steps <= 0:
        raise UserError(f"--stop_after_steps must be positive, got {args.stop_after_steps}")
    if args.length_group_steps < 1:
        raise UserError(f"--length_group_steps must be >= 1, got {args.length_group_steps}")
    if args.length_group_steps > 1 and not (args.group_by_modality_length
                                            or args.train_sampling_strategy == "group_by_length"):
        raise UserError(f"--length_group_steps {args.length_group_steps} only acts on grouped sampling: add "
                        "--group_by_modality_length True (or --group_by_length True)")
    if args.group_by_modality_length and args.train_sampling_strategy != "random":
        raise UserError("--group_by_modality_length replaces the sampler; drop --train_sampling_strategy "
                        f"{args.train_sampling_strategy} (or --group_by_length)")
    if str(getattr(args.eval_strategy, "value", args.eval_strategy)) != "no" or args.do_eval:
        raise UserError("evaluation during training is not supported (there is no eval set); drop --eval_strategy / "
                        "--do_eval and evaluate the saved checkpoint with the benchmark scripts")
    if model_args.pretrain_mm_mlp_adapter and not os.path.isfile(model_args.pretrain_mm_mlp_adapter):
        raise UserError(f"--pretrain_mm_mlp_adapter {model_args.pretrain_mm_mlp_adapter}: file not found "
                        "(stage 1 writes OUTPUT_DIR/mm_projector.bin)")
    if not os.path.isdir(model_args.model_name_or_path):
        raise UserError(f"--model_name_or_path {model_args.model_name_or_path}: no such directory (pass a local "
                        "checkpoint folder holding config.json and the weights)")
    if model_args.vision_tower is not None and not os.path.isfile(os.path.join(model_args.vision_tower,
                                                                               "config.json")):
        raise UserError(f"--vision_tower {model_args.vision_tower}: not a CLIP directory (no config.json)")
