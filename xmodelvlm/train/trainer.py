"""`XmodelVLMTrainer`: HF `Trainer` (transformers 5 API) with what the two Xmodel-VLM stages need.

* sampling: `group_by_modality_length` (single-modality, length-grouped batches) and `group_by_length` use our
  seed-and-epoch-deterministic sampler with the dataset's precomputed lengths (never loading every sample);
* optimizer: the projector gets its own parameter groups with `mm_projector_lr`; biases and norms get no weight
  decay (HF's rule), in both the projector and the LM;
* logging: loss, learning rate(s), grad norm (HF), plus samples/s and tokens/s over each logging interval, summed
  over processes (tokens = non-padding tokens from the attention mask, an image counting as its image tokens);
* saving, by what is trained:
  - projector only (stage 1): `mm_projector.bin` (keys `model.mm_projector.*`) + `config.json`;
  - LoRA: the adapter + `non_lora_trainables.bin` + `config.json`;
  - otherwise (stage 2): a complete checkpoint (safetensors, config, generation config, tokenizer, the image
    processor's preprocessor_config.json), gathered from ZeRO-3 shards;
  checkpoints also hold the optimizer, scheduler, RNG and trainer state, so a run resumes where it stopped and
  feeds the same next batch (`_load_from_checkpoint` knows the projector-only and LoRA layouts).
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import Trainer, TrainerCallback

from ..errors import UserError
from ..model.tokenizer import save_tokenizer
from ..utils import atomic_write_bytes
from .model_setup import (PROJECTOR_FILE, get_vlm, is_projector_param, load_projector_weights,
                          projector_state_dict)
from .sampler import ModalityLengthGroupedSampler

logger = logging.getLogger("xmodelvlm.train")

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


class StopAfterStepsCallback(TrainerCallback):
    """`--stop_after_steps N`: after N optimizer steps in this run, save a checkpoint and stop (resumable)."""

    def __init__(self, steps: int):
        self.steps = steps
        self.first_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.first_step = state.global_step  # already restored when resuming

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step - self.first_step >= self.steps and state.global_step < state.max_steps:
            control.should_save = True
            control.should_training_stop = True
        return control


def _torch_save_atomic(obj, path: Path) -> None:
    import io
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


class XmodelVLMTrainer(Trainer):
    def __init__(self, *args, image_processor=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.image_processor = image_processor
        self._num_image_tokens = get_vlm(self.model).num_image_tokens
        self._projector_group: int | None = None
        self._projector_step_lr: float | None = None
        self._interval_start: float | None = None
        self._interval_samples = 0
        self._interval_tokens = 0

    # ---- what is trained ---------------------------------------------------------------------------------
    @property
    def save_mode(self) -> str:
        """'lora', 'projector' (only projector parameters train) or 'full'."""
        if getattr(self.args, "lora_enable", False):
            return "lora"
        trainable = [name for name, p in self.model.named_parameters() if p.requires_grad]
        if trainable and all(is_projector_param(name) for name in trainable):
            return "projector"
        return "full"

    # ---- sampling ----------------------------------------------------------------------------------------
    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        by_modality = self.args.group_by_modality_length
        by_length = self.args.train_sampling_strategy == "group_by_length"
        if not (by_modality or by_length) or not hasattr(dataset, "modality_lengths"):
            return super()._get_train_sampler(train_dataset)
        lengths = dataset.modality_lengths if by_modality else [abs(n) for n in dataset.modality_lengths]
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return ModalityLengthGroupedSampler(lengths, batch_size=self.args.train_batch_size,
                                            world_size=self.args.world_size * self.args.gradient_accumulation_steps,
                                            seed=seed, group_steps=self.args.length_group_steps)

    # ---- optimizer ---------------------------------------------------------------------------------------
    def create_optimizer(self, model=None):
        opt_model = self.model if model is None else model
        if self.optimizer is not None:
            return self.optimizer
        decay = set(self.get_decay_parameter_names(opt_model))
        projector_lr = self.args.mm_projector_lr
        buckets: dict[tuple[bool, bool], list] = {}
        for name, param in opt_model.named_parameters():
            if not param.requires_grad:
                continue
            own_group = projector_lr is not None and is_projector_param(name)
            buckets.setdefault((own_group, name in decay), []).append(param)
        if not buckets:
            raise UserError("no trainable parameters (check the --tune_mm_mlp_adapter / --freeze_* flags)")
        groups = []
        for (own_group, decays), params in sorted(buckets.items()):
            group = {"params": params, "weight_decay": self.args.weight_decay if decays else 0.0}
            if own_group:
                group["lr"] = projector_lr
                if self._projector_group is None:
                    self._projector_group = len(groups)
            groups.append(group)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        optimizer_kwargs.pop("params", None)
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    # ---- loss and throughput -----------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            if self._interval_start is None:
                self._interval_start = time.perf_counter()
            input_ids = inputs["input_ids"]
            mask = inputs.get("attention_mask")
            images = inputs.get("images")
            self._interval_samples += int(input_ids.shape[0])
            # Summed on the device: no host sync per micro-batch, one at logging time.
            self._interval_tokens = self._interval_tokens + (mask.sum() if mask is not None else input_ids.numel())
            if images is not None:
                self._interval_tokens = self._interval_tokens + int(images.shape[0]) * (self._num_image_tokens - 1)
        return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._interval_start is not None:
            counts = torch.stack([
                torch.tensor(float(self._interval_samples), dtype=torch.float64, device=self.args.device),
                torch.as_tensor(self._interval_tokens, device=self.args.device).to(torch.float64)])
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                dist.all_reduce(counts)
            elapsed = max(time.perf_counter() - self._interval_start, 1e-9)
            logs["samples_per_second"] = round(float(counts[0]) / elapsed, 3)
            logs["tokens_per_second"] = round(float(counts[1]) / elapsed, 1)
            self._interval_start = time.perf_counter()
            self._interval_samples = self._interval_tokens = 0
            if self._projector_step_lr is not None:
                logs["mm_projector_lr"] = self._projector_step_lr
        super().log(logs, start_time)

    def _get_learning_rate(self) -> float:
        # Called right after optimizer.step(), before the scheduler steps: the rates this step used.
        if self._projector_group not in (None, 0) and self.optimizer is not None:
            self._projector_step_lr = self.optimizer.param_groups[self._projector_group]["lr"]
        return super()._get_learning_rate()

    # ---- saving ------------------------------------------------------------------------------------------
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        output_dir = Path(output_dir if output_dir is not None else self.args.output_dir)
        mode = self.save_mode
        if mode == "projector":
            state = projector_state_dict(self.model)  # every rank: gathering is collective under ZeRO-3
            if self.args.should_save:
                output_dir.mkdir(parents=True, exist_ok=True)
                _torch_save_atomic(state, output_dir / PROJECTOR_FILE)
                self._save_config(output_dir)
            return
        if mode == "lora":
            from .lora import save_lora_checkpoint
            save_lora_checkpoint(self.model, output_dir, self.args.lora_bias, self.args.should_save)
            if self.args.should_save:
                self._save_config(output_dir)
                self._save_processors(output_dir)
            return
        super().save_model(str(output_dir), _internal_call=_internal_call)

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        """A full checkpoint: weights + config (use_cache on, for inference) + tokenizer + image processor."""
        config = get_vlm(self.model).config
        use_cache, config.use_cache = config.use_cache, True
        try:
            super()._save(output_dir, state_dict=state_dict)
        finally:
            config.use_cache = use_cache
        if self.args.should_save:
            self._save_processors(Path(output_dir if output_dir is not None else self.args.output_dir))

    def _save_config(self, output_dir: Path) -> None:
        config = get_vlm(self.model).config
        use_cache, config.use_cache = config.use_cache, True
        try:
            config.save_pretrained(output_dir)
        finally:
            config.use_cache = use_cache

    def _save_processors(self, output_dir: Path) -> None:
        if self.processing_class is not None:
            save_tokenizer(self.processing_class, output_dir)
        if self.image_processor is not None:
            self.image_processor.save_pretrained(output_dir)

    # ---- resuming ----------------------------------------------------------------------------------------
    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        checkpoint = Path(resume_from_checkpoint)
        has_weights = any((checkpoint / name).is_file() for name in WEIGHT_FILES)
        if (checkpoint / PROJECTOR_FILE).is_file() and not has_weights:
            load_projector_weights(model if model is not None else self.model, checkpoint / PROJECTOR_FILE)
            return
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        from .lora import NON_LORA_FILE, load_non_lora_trainables
        if (checkpoint / NON_LORA_FILE).is_file():
            load_non_lora_trainables(model if model is not None else self.model, checkpoint / NON_LORA_FILE)


def find_resume_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest complete `checkpoint-N` in `output_dir` (complete = its trainer_state.json was written, which
    HF does last), or None."""
    root = Path(output_dir)
    if not root.is_dir():
        return None
    candidates = []
    for path in root.glob("checkpoint-*"):
        suffix = path.name[len("checkpoint-"):]
        if path.is_dir() and suffix.isdigit():
            candidates.append((int(suffix), path))
    for step, path in sorted(candidates, reverse=True):
        if (path / "trainer_state.json").is_file():
            return str(path)
        logger.warning("ignoring the incomplete checkpoint %s (no trainer_state.json)", path)
    return None
