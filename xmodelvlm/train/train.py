"""Train Xmodel-VLM (stage 1: projector alignment; stage 2: instruction tuning), optionally under DeepSpeed.

    python train.py --model_name_or_path LM_DIR --vision_tower CLIP_DIR --version plain \\
        --data_path blip_laion_cc_sbu_558k.json --image_folder images --tune_mm_mlp_adapter True \\
        --output_dir checkpoints/stage1 ...
    deepspeed --include localhost:0,1,2,3 train.py --deepspeed scripts/deepspeed/zero3.json ...

(also `python -m xmodelvlm.train ...`). The flags are the seed's plus every transformers `TrainingArguments`
field; see `xmodelvlm.train.arguments`. A rerun with the same output_dir resumes from its newest checkpoint
(`--overwrite_output_dir` starts afresh).
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import warnings
from pathlib import Path

from ..errors import UserError, run_cli
from ..utils import free_port

logger = logging.getLogger("xmodelvlm.train")


def ensure_single_process_env(argv: list[str]) -> None:
    """`python train.py --deepspeed ...` without a launcher: DeepSpeed still needs the torch.distributed variables
    (SPEC §8), so describe a one-process world."""
    wants_deepspeed = any(a == "--deepspeed" or a.startswith("--deepspeed=") for a in argv)
    if wants_deepspeed and "WORLD_SIZE" not in os.environ and "OMPI_COMM_WORLD_SIZE" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))


def setup_logging(training_args) -> None:
    import transformers

    main = training_args.process_index == 0
    level = logging.INFO if main else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=level,
                        stream=sys.stderr)
    for name in ("xmodelvlm", "xmodelvlm.train", "xmodelvlm.data"):
        logging.getLogger(name).setLevel(level)
    # transformers at INFO prints every config it loads; keep the Trainer's own run summary.
    transformers.utils.logging.set_verbosity(logging.WARNING)
    transformers.utils.logging.disable_default_handler()
    transformers.utils.logging.enable_propagation()
    logging.getLogger("transformers.trainer").setLevel(level)
    if training_args.disable_tqdm:
        transformers.utils.logging.disable_progress_bar()


def choose_resume_checkpoint(training_args) -> str | None:
    """An explicit --resume_from_checkpoint, else the newest complete checkpoint-N (unless overwriting)."""
    from .trainer import find_resume_checkpoint

    explicit = training_args.resume_from_checkpoint
    if explicit:
        if not Path(explicit).is_dir():
            raise UserError(f"--resume_from_checkpoint {explicit}: no such checkpoint directory")
        return explicit
    output_dir = Path(training_args.output_dir)
    if training_args.overwrite_output_dir:
        stale = sorted(output_dir.glob("checkpoint-*")) if output_dir.is_dir() else []
        if stale and training_args.should_save:
            logger.warning("--overwrite_output_dir: deleting %d old checkpoint(s) in %s", len(stale), output_dir)
            for path in stale:
                shutil.rmtree(path, ignore_errors=True)
        _barrier()
        return None
    checkpoint = find_resume_checkpoint(output_dir)
    if checkpoint:
        logger.info("resuming from %s (pass --overwrite_output_dir to start afresh)", checkpoint)
    return checkpoint


def _barrier() -> None:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def quiet_third_party_warnings() -> None:
    # DeepSpeed 0.19 calls collectives torch 2.13 deprecates, once per step and parameter group.
    warnings.filterwarnings("ignore", message=r".*torch\.distributed\.\w+` is deprecated", category=FutureWarning)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet_third_party_warnings()
    ensure_single_process_env(argv)
    from transformers import set_seed

    from ..data.dataset import make_supervised_data_module
    from .arguments import parse_arguments
    from .model_setup import build_model, describe_trainable, get_vlm
    from .trainer import StopAfterStepsCallback, XmodelVLMTrainer

    model_args, data_args, training_args = parse_arguments(argv)
    if not training_args.output_dir:
        raise UserError("--output_dir is required")
    setup_logging(training_args)
    resume = choose_resume_checkpoint(training_args)
    set_seed(training_args.seed)

    model, tokenizer, image_processor = build_model(model_args, data_args, training_args)
    vlm = get_vlm(model)
    logger.info("trainable: %s", describe_trainable(model))
    version = "v1" if model_args.version == "vicuna_v1" else model_args.version
    data_module = make_supervised_data_module(
        tokenizer, image_processor, data_args, version=version, num_image_tokens=vlm.num_image_tokens,
        model_max_length=training_args.model_max_length, model_cfg=vlm.config)

    callbacks = [StopAfterStepsCallback(training_args.stop_after_steps)] if training_args.stop_after_steps else []
    trainer = XmodelVLMTrainer(model=model, args=training_args, processing_class=tokenizer,
                               image_processor=image_processor, callbacks=callbacks, **data_module)
    trainer.train(resume_from_checkpoint=resume)

    if trainer.state.global_step < trainer.state.max_steps:
        if trainer.is_world_process_zero():
            logger.warning("stopped at step %d of %d after --stop_after_steps; rerun the same command to resume",
                           trainer.state.global_step, trainer.state.max_steps)
        return 0
    trainer.save_state()
    trainer.save_model(training_args.output_dir)
    if trainer.args.should_save:
        logger.info("saved the %s output to %s", trainer.save_mode, training_args.output_dir)
    skipped = getattr(data_module["train_dataset"], "skip_stats", {})
    if skipped:
        logger.warning("skipped samples (this process): %s", skipped)
    return 0


def _distributed_cleanup(ok: bool) -> bool:
    """Tear down torch.distributed if it is up; True if it was (the caller then leaves with os._exit).
    After a failure there is no barrier: the other processes may never reach it."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return False
    if not (dist.is_available() and dist.is_initialized()):
        return False
    try:
        if ok:
            dist.barrier()
        dist.destroy_process_group()
    except Exception:  # a peer died: exiting matters more than a clean teardown
        pass
    return True


def cli(argv: list[str] | None = None) -> None:
    """Entry point: `UserError` → one line + exit 2; after a distributed run, flush and `os._exit` (SPEC §8: a
    clean interpreter shutdown of a multi-process gloo run sometimes aborts with "terminate called ...")."""
    code = 0
    try:
        run_cli(main, argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback
        traceback.print_exc()
        code = 1
    distributed = _distributed_cleanup(code == 0)
    sys.stdout.flush()
    sys.stderr.flush()
    if distributed:
        logging.shutdown()
        os._exit(code)
    raise SystemExit(code)


if __name__ == "__main__":
    cli()
