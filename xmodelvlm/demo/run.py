"""The whole system on synthetic data, on a CPU, in one command: data → stage 1 → stage 2 → evaluation → inference.

    python -m xmodelvlm.demo.run [OUT_DIR (default ./demo_out)] [--quick] [--fresh | --from STEP] [--jobs N]
                                 [--device cpu|cuda] [--set NAME=VALUE ...]
    bash scripts/demo.sh ...                                   # the same

Steps (one line of progress each, with its time), through the real entry points:

  data        synthetic scenes in the real formats: LLaVA-558K captions, a LLaVA-665K-style mix, and POPE / GQA /
              MME in LLaVA-1.5's playground layout (`xmodelvlm.demo.synthetic_data`)
  tokenizer   a SentencePiece unigram model trained on the synthetic text, with the released tokenizer's settings;
              the v1 system prompt and the short-answer instruction are one piece each (`prompt_pieces`)
  clip        a small CLIP in the real on-disk format (`xmodelvlm.demo.tiny_clip`), pre-trained CLIP-style on the
              synthetic images for about a minute (a stand-in for a pretrained CLIP; `--set clip_steps=0` keeps it
              at its random initialisation), then frozen
  lm          a small Llama-architecture LM pre-trained briefly on synthetic text alone, saved in Xmodel-LM's
              layout (`xmodelvlm.demo.tiny_lm`): new scenes the generator draws for it, each laid out as the image
              tokens will be (a grid of word vectors) and followed by a conversation or a caption, so that it
              learns to look a scene up before it ever sees an image
  stage1      `scripts/pretrain.sh`: the projector on the captions (`plain`), LM and tower frozen
  stage2      `scripts/finetune.sh`: projector + LM on the instruction mix (`v1`)
  export      stage 1 alone as a complete checkpoint (`python -m xmodelvlm.train.export_stage1`, built by the
              trainer's own model setup: the very model stage 2 starts from)
  eval1-*     `scripts/eval/{pope,gqa,mme}.sh` on the stage-1 checkpoint with `plain` prompts: its LM never saw the
              `v1` template, and `plain` (image, then text) is the only prompt format stage 1 trained
  eval2-*     the same on the stage-2 checkpoint with `v1` prompts (the protocol)
  inference   `inference.py` on a held-out GQA image

then a table (POPE F1, GQA accuracy, MME perception; stage 1 alone vs after stage 2) and `OUT_DIR/results.json`
(`{"stage1": {...}, "stage2": {...}, "seconds": wall time of this run}`). Logs: `OUT_DIR/logs/<step>.log`.

Steps whose inputs are ready run side by side, `--jobs` at a time (default: the number of cores), each with
`--threads` threads (default 1): these models are so small that one thread per process and one process per core
beats several threads per process for the many short steps (evaluation is mostly Python start-up). The four
training steps (CLIP, LM warm-up, stage 1, stage 2) are the long ones, and little else is ready while they run, so
each runs alone with every thread the others would have had (`--jobs` x `--threads`); with `--set
train_processes=2`, stage 1 and stage 2 run as two processes (DDP through torchrun) that share them. (The CLIP and
LM warm-ups side by side with one thread each are slower than one after the other with two: the LM's is the
longer, and it gains the most from a second thread; `bench/bench_cpu_processes.py`.)

Rerunning reuses what is built. Each step records `OUT_DIR/.demo/<step>.json`: "started" (with its settings) before
it runs, "done" after its outputs are complete. A step is reused when it is done with the same settings and every
step it depends on was reused; a step that started with the same settings but did not finish runs again on top of
what it left, so training resumes from its newest checkpoint (the trainer's resume) and evaluation from the
questions already answered (the engine's resume); anything else is rebuilt from scratch, and so is every step that
depends on it. `--fresh` rebuilds everything, `--from STEP` that step and the steps that depend on it.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from xmodelvlm.demo.synthetic_data import GENERATOR_VERSION, SHORT_ANSWER_SUFFIX
from xmodelvlm.demo.tiny_clip import AUX_HEADS
from xmodelvlm.demo.tiny_lm import CORPORA, GRID_CORPORA, LLAMA_INIT_STD
from xmodelvlm.errors import ArgumentParser, UserError, run_cli
from xmodelvlm.utils import atomic_write_json, free_port

REPO_DIR = Path(__file__).resolve().parents[2]
DEFAULT_OUT = "demo_out"
STATE_DIR = ".demo"
BENCHMARKS = ("pope", "gqa", "mme")


# ---------------------------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class DemoSettings:
    """Every size and hyperparameter of the demo. `DEFAULT` fits the 10-minute bar on 2 CPU cores; `QUICK` is
    the CI integration test's shortened run."""

    seed: int = 0
    # data: 48 px scenes whose five object slots are the centres of a 3x3 grid of 16 px cells
    num_train: int = 4000
    num_eval: int = 300
    image_size: int = 48
    # tokenizer
    vocab_size: int = 512
    # the v1 system prompt and the short-answer instruction as one piece each (SentencePiece user-defined symbols):
    # they are in every stage-2 sample and eval prompt, 29 + 10 pieces each otherwise; a stage-2 sample falls from
    # 96 to 55 tokens on average and a step gets 1.3x faster, the scores within the spread of seeds (BENCHMARKS.md)
    prompt_pieces: bool = True
    # CLIP tower: patch 16, so each of its 3x3 = 9 patch tokens sees one cell, i.e. one slot. Pre-trained CLIP-style
    # (captions, plus region phrases that name what lies in each patch and where) as a stand-in for a pretrained
    # CLIP, then frozen. clip_steps = 0 keeps it at its random initialisation, on which the VLM never learned to
    # read shape (BENCHMARKS.md, "Demo").
    clip_patch: int = 16
    # 400 steps: the probes stay at 0.98-1.00 for presence, colour and shape (slot falls to 0.53; the VLM also has
    # the place from the token's position) and the VLM scores as with 600, 20 s sooner (BENCHMARKS.md)
    clip_steps: int = 400
    clip_batch: int = 64
    clip_lr: float = 1e-3
    clip_located_phrases: bool = True  # region phrases name the place too ("a red circle on the left")
    # "linear": the region loss reads the tokens through a head of its own; "none": it acts on the tokens themselves,
    # which makes shape and slot louder in them (BENCHMARKS.md) but did not measurably help the VLM
    clip_aux_head: str = "linear"
    # > 0: a loss that makes the tokens the VLM reads vary alike in every direction (the background no longer
    # dominates them); it speeds up learning shape from them in isolation but did not help the VLM (BENCHMARKS.md)
    clip_isotropy_weight: float = 0.0
    clip_max_seconds: float = 150.0  # a guard for a loaded machine; normally the steps finish well before
    # language model (Llama architecture)
    lm_hidden: int = 128
    lm_intermediate: int = 384
    lm_layers: int = 3
    lm_heads: int = 4
    lm_kv_heads: int = 4
    # 900 steps on new scenes: the LM learns to answer from a grid; after 600 the lookups of one LM in four were
    # still near the constant answer (BENCHMARKS.md, "An LM that has learned to look things up"). Batches of 32
    # cost half of 64's and learned the same lookups; unlike the batch-64 LMs they had not settled on answering
    # "is there a <colour> <shape>?" from the colour alone. Stage 2 on them learned the pair in four runs of six
    # (POPE 93.4-95.4, and 82.0 / 82.6; batch 64: 77.5-94.0; BENCHMARKS.md, "Presence is answered from the colour")
    lm_warmup_steps: int = 900
    lm_warmup_batch: int = 32
    lm_warmup_lr: float = 3e-3
    # "scenes": the warm-up reads scenes laid out as the image tokens will be, one vector per 16 px cell (the mean
    # embedding of the words for what lies there), each followed by a conversation about the scene or by its
    # caption; the scenes are new ones drawn by the generator (text only), so it cannot answer from memory and
    # learns to look the grid up, which is what stage 2 then has to do with the image tokens. With it the VLM reads
    # shape ("what shape is the <colour> object?" 0.88-1.00 against 0.12-0.29) and scored GQA 70.7-76.3 in every
    # run, POPE 77.5-94.0 (against 58.0-75.3 and 73.9-86.5 for "joined"; BENCHMARKS.md, "An LM that has learned to
    # look things up"). "joined" (each training image's caption then its conversation, as text) taught it no
    # lookup in 450 steps; "grid" adds the training scenes' grids to "joined" ("A warm-up that reads scene grids")
    lm_corpus: str = "scenes"
    lm_scenes: int = 20000  # with lm_corpus "scenes": how many new scenes the warm-up draws (28,800 documents read)
    # weights drawn with standard deviation 0.08 instead of Llama's 0.02: from 0.02, 900 steps on the same scenes
    # left the shape lookups at the constant answer (BENCHMARKS.md)
    lm_init_std: float = 0.08
    # the XDP projector with N = 1 (the released model's older revision): one image token per cell. The recipe's
    # N = 4 concatenates 4 consecutive tokens of a row, which on a 3x3 grid would mix cells of different rows
    projector: str = "xdpnetv10_1"
    # stage 1: projector only
    stage1_batch: int = 32
    stage1_lr: float = 2e-3
    stage1_epochs: float = 1.0  # stage 1 barely moves the caption loss with this LM (BENCHMARKS.md); one pass
    # stage 2: projector + LM. Passes over the data are what teach it to look (presence of a colour-shape pair,
    # and selecting the object a question names): batch 16 x 6 epochs scored POPE F1 ~65-74, x 8 75.8, x 10 57-85
    # over seeds (BENCHMARKS.md, "More passes over the data", "How robust is POPE 85?"); with prompt pieces and
    # faster images 13 epochs cost what 10 did, and scored POPE 73.9-86.5 and GQA 58.0-75.3 over six seeds
    # (BENCHMARKS.md, "Prompt pieces, faster images, more passes"). Both are late transitions that a seed or a
    # CPU's rounding can miss; what both lacked was reading shape (BENCHMARKS.md, "Shape is what is missing"),
    # which the `scenes` warm-up brings. On it 8 epochs scored as 13 did (BENCHMARKS.md, "An LM that has learned to
    # look things up", "Presence is answered from the colour"). Stage 2 keeps its built samples in memory
    # (`--cache_samples`).
    stage2_batch: int = 16
    stage2_lr: float = 1e-3
    stage2_projector_lr: float = 1e-4
    stage2_epochs: float = 8.0
    # the three trainings (LM warm-up, stage 1, stage 2) sort their samples by length across this many steps' worth
    # (`--length_group_steps`): random batches were half padding in the LM warm-up (BENCHMARKS.md)
    length_group_steps: int = 16
    # stage 1 and stage 2 on a CPU as this many processes sharing the step's threads (`scripts/*.sh` with
    # LAUNCHER=torchrun: DDP over gloo, the batch split between them), capped by --jobs and by the batches (each
    # process gets an equal share); one process on a GPU. 2 trained stage 2 1.16x faster on 2 cores with the old
    # tokenizer (about 1.04x with prompt pieces), and its different rounding moves where the late transitions of
    # stage 2 land, as another seed does (BENCHMARKS.md, "How robust is POPE 85?"): the default stays at one process.
    train_processes: int = 1
    train_seed: int = 42  # both stages' --seed (the Trainer's default)
    # evaluation
    eval_batch: int = 50
    stage1_conv_mode: str = "plain"

    def pick(self, *names: str) -> dict:
        return {name: getattr(self, name) for name in names}


DEFAULT = DemoSettings()
QUICK = dataclasses.replace(DEFAULT, num_train=1500, num_eval=120, clip_steps=300, lm_warmup_steps=100,
                            lm_scenes=3200, stage1_epochs=1.0, stage2_epochs=3.0)


# ---------------------------------------------------------------------------------------------------------------
# Context and subprocesses


class StepFailed(Exception):
    """A step could not finish; the message names the command and the log to read."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Context:
    out: Path
    settings: DemoSettings
    threads: int = 1
    python: str = sys.executable
    quick: bool = False
    device: str = "cpu"

    def __post_init__(self):
        self._step = threading.local()  # per step: the threads it was given
        self._procs: dict[int, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self.stopping = False

    data = property(lambda self: self.out / "data")
    eval_data = property(lambda self: self.out / "data" / "eval")
    tokenizer = property(lambda self: self.out / "models" / "tokenizer")
    clip = property(lambda self: self.out / "models" / "clip")
    lm = property(lambda self: self.out / "models" / "lm")
    pretrain_out = property(lambda self: self.out / "checkpoints" / "pretrain")
    stage1 = property(lambda self: self.out / "checkpoints" / "stage1")
    stage2 = property(lambda self: self.out / "checkpoints" / "stage2")
    eval_root = property(lambda self: self.out / "eval")
    logs = property(lambda self: self.out / "logs")

    def eval_devices(self) -> dict[str, str]:
        """The eval scripts' device choice: no GPU for a CPU run (whatever the machine has), one GPU otherwise."""
        return {"CUDA_VISIBLE_DEVICES": "" if self.device == "cpu" else os.environ.get("CUDA_VISIBLE_DEVICES", "0")}

    @property
    def step_threads(self) -> int:
        """Threads for the commands of the step running in this (scheduler) thread."""
        return getattr(self._step, "threads", self.threads)

    def set_step_threads(self, threads: int) -> None:
        self._step.threads = threads

    def log_path(self, step: str) -> Path:
        return self.logs / f"{step}.log"

    def env(self, **extra) -> dict[str, str]:
        env = dict(os.environ)
        threads = str(self.step_threads)
        env.update(PYTHON=self.python, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads,
                   TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = str(REPO_DIR) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        # glibc serves blocks above 128 KB (most of these models' activations) by mmap and unmaps them on free, so
        # every training step faulted its activations in afresh: 1.1 M page faults in 300 stage-2 steps, 0.15 M
        # with these (BENCHMARKS.md). Other C libraries ignore them; a user's own settings win.
        env.setdefault("MALLOC_MMAP_THRESHOLD_", str(32 << 20))
        env.setdefault("MALLOC_TRIM_THRESHOLD_", str(1 << 32))
        env.update({key: str(value) for key, value in extra.items()})
        return env

    def run(self, step: str, cmd: list, env: dict[str, str] | None = None, stdout_file: Path | None = None) -> str:
        """Run `cmd` (in its own process group), its output appended to the step's log (stdout to `stdout_file`
        instead, if given); returns the new part of the log. Non-zero exit → `StepFailed` with the log's tail."""
        cmd = [str(c) for c in cmd]
        log_path = self.log_path(step)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            start = log.tell()
            log.write(f"\n$ {' '.join(cmd)}\n".encode())
            log.flush()
            out = open(stdout_file, "wb") if stdout_file else log
            try:
                with self._lock:
                    if self.stopping:
                        raise StepFailed("stopped")
                    proc = subprocess.Popen(cmd, stdout=out, stderr=log, stdin=subprocess.DEVNULL, cwd=REPO_DIR,
                                            env=env or self.env(), start_new_session=True)
                    self._procs[proc.pid] = proc
                try:
                    proc.wait()
                finally:
                    with self._lock:
                        self._procs.pop(proc.pid, None)
            finally:
                if stdout_file:
                    out.close()
        with open(log_path, "rb") as f:
            f.seek(start)
            output = f.read().decode("utf-8", "replace")
        if proc.returncode != 0:
            if self.stopping:
                raise StepFailed("stopped")
            lines = [line for line in output.replace("\r", "\n").splitlines() if line.strip()]
            tail = "\n".join("    " + line for line in lines[-12:])
            raise StepFailed(f"`{' '.join(cmd[:4])} ...` exited with {proc.returncode}; full log: {log_path}\n{tail}",
                             exit_code=2 if proc.returncode == 2 else 1)
        return output

    def stop_all(self) -> None:
        """Terminate every running command (whole process groups: bash scripts and the python they start)."""
        with self._lock:
            self.stopping = True
            procs = list(self._procs.values())
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for proc in procs:
                if proc.poll() is None:
                    try:
                        os.killpg(proc.pid, sig)
                    except (ProcessLookupError, PermissionError):
                        pass
            deadline = time.time() + 10
            while time.time() < deadline and any(p.poll() is None for p in procs):
                time.sleep(0.1)


# tqdm's "12/125 [" and the HF Trainer's "'loss': 2.31" / our tools' "step 12/80 loss 2.31", for the status line
_PROGRESS = re.compile(r"(\d+)/(\d+) \[|step (\d+)/(\d+)")
_LOSS = re.compile(r"'loss': '?([0-9.]+)|\bloss ([0-9.]+)")


def _losses(text: str) -> list[float]:
    return [float(a or b) for a, b in _LOSS.findall(text)]


def live_hint(log_path: Path) -> str:
    """"12/125 loss 0.91" from the end of a log, or ""."""
    try:
        with open(log_path, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 4096))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    hint = []
    progress = _PROGRESS.findall(tail)
    if progress:
        a, b, c, d = progress[-1]
        hint.append(f"{a or c}/{b or d}")
    losses = _losses(tail)
    if losses:
        hint.append(f"loss {losses[-1]:.2f}")
    return " ".join(hint)


# ---------------------------------------------------------------------------------------------------------------
# Steps


def step_data(ctx: Context) -> str:
    from . import synthetic_data

    s = ctx.settings
    manifest = synthetic_data.generate(ctx.data, seed=s.seed, num_train=s.num_train, num_eval=s.num_eval,
                                       image_size=s.image_size, quiet=True)
    c = manifest["counts"]
    return (f"{c['train_images']} training images, {c['instruct_samples']} conversations; "
            f"{c['pope_questions']} POPE / {c['gqa_questions']} GQA / {c['mme_questions']} MME questions")


def step_tokenizer(ctx: Context) -> str:
    import sentencepiece as spm

    from . import tiny_tokenizer

    out = tiny_tokenizer.train_tokenizer(tiny_tokenizer.dataset_texts(ctx.data), ctx.tokenizer,
                                         vocab_size=ctx.settings.vocab_size,
                                         prompt_pieces=ctx.settings.prompt_pieces)
    pieces = spm.SentencePieceProcessor(model_file=str(out / tiny_tokenizer.MODEL_FILE)).get_piece_size()
    return f"SentencePiece unigram, {pieces} pieces"


def step_clip(ctx: Context) -> str:
    from .tiny_clip import STATS_FILE

    s = ctx.settings
    ctx.run("clip", [ctx.python, "-m", "xmodelvlm.demo.tiny_clip", "--data", ctx.data, "--out", ctx.clip,
                     "--image-size", s.image_size, "--patch-size", s.clip_patch, "--steps", s.clip_steps,
                     "--batch-size", s.clip_batch, "--lr", s.clip_lr, "--seed", s.seed,
                     "--threads", ctx.step_threads, "--max-seconds", s.clip_max_seconds, "--device", ctx.device,
                     "--located-phrases" if s.clip_located_phrases else "--no-located-phrases",
                     "--aux-head", s.clip_aux_head, "--isotropy-weight", s.clip_isotropy_weight])
    stats = json.loads((ctx.clip / STATS_FILE).read_text())
    trained = (f"CLIP-style training {stats['steps']} steps, loss {stats['first_loss']:.2f} → "
               f"{stats['final_loss']:.2f}" if stats["steps"] else "random init (clip_steps=0)")
    probes = ", ".join(f"{name} {stats.get(key, float('nan')):.2f}" for name, key in (
        ("presence", "presence_acc"), ("colour", "color_acc"), ("shape", "shape_acc"), ("slot", "position_acc")))
    return f"{trained}; held-out probes: {probes}"


def lm_grid_side(s: DemoSettings) -> int:
    """The side of the LM warm-up's scene grids (`lm_corpus` "grid" or "scenes"): the tower's patches per side,
    which with XDP N = 1 are the image tokens per side; 0 for the other corpora."""
    return s.image_size // s.clip_patch if s.lm_corpus in GRID_CORPORA else 0


def step_lm(ctx: Context) -> str:
    from .tiny_lm import STATS_FILE

    s = ctx.settings
    ctx.run("lm", [ctx.python, "-m", "xmodelvlm.demo.tiny_lm", "--data", ctx.data, "--tokenizer", ctx.tokenizer,
                   "--out", ctx.lm, "--hidden", s.lm_hidden, "--intermediate", s.lm_intermediate,
                   "--layers", s.lm_layers, "--heads", s.lm_heads, "--kv-heads", s.lm_kv_heads,
                   "--steps", s.lm_warmup_steps, "--batch-size", s.lm_warmup_batch, "--lr", s.lm_warmup_lr,
                   "--seed", s.seed, "--threads", ctx.step_threads, "--corpus", s.lm_corpus, "--device", ctx.device,
                   "--length-group-steps", s.length_group_steps, "--init-std", s.lm_init_std,
                   *(["--grid-side", lm_grid_side(s)] if lm_grid_side(s) else []),
                   *(["--scenes", s.lm_scenes] if s.lm_corpus == "scenes" else [])])
    st = json.loads((ctx.lm / STATS_FILE).read_text())
    grids = f" (with {st['grid_documents']:,} scene-grid documents)" if st.get("grid_documents") else ""
    warm = f"text warm-up {st['steps']} steps{grids}, loss {st['first_loss']:.2f} → {st['final_loss']:.2f}" \
        if st["steps"] else "random init"
    return f"Llama, {st['parameters'] / 1e6:.1f}M parameters (hidden {st['hidden_size']}, " \
           f"{st['num_hidden_layers']} layers); {warm}"


def resolve_train_processes(settings: DemoSettings, jobs: int, device: str) -> DemoSettings:
    """`settings` with `train_processes` as it will run: 1 on a GPU; on a CPU at most `jobs`, and a divisor of
    both stages' batches (each process takes an equal share of every step)."""
    n = 1 if device != "cpu" else max(1, min(settings.train_processes, jobs))
    while settings.stage1_batch % n or settings.stage2_batch % n:
        n -= 1
    return dataclasses.replace(settings, train_processes=n)


def _train_env(ctx: Context, global_batch: int, **paths) -> dict[str, str]:
    """The scripts' environment: one process (`LAUNCHER=python`) or `train_processes` under torchrun, sharing the
    step's threads."""
    n = ctx.settings.train_processes
    threads = max(1, ctx.step_threads // n)
    launch = {"LAUNCHER": "torchrun", "MASTER_PORT": free_port()} if n > 1 else {"LAUNCHER": "python"}
    return ctx.env(DEVICE=ctx.device, DEEPSPEED_CONFIG="none", NUM_WORKERS="0", LM_PATH=ctx.lm, VISION_TOWER=ctx.clip,
                   GLOBAL_BATCH=global_batch, PER_DEVICE_BATCH=global_batch, OMP_NUM_THREADS=threads,
                   MKL_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads, **launch, **paths)


def _process_list(ctx: Context) -> str:
    """The scripts' GPU_LIST, which on a CPU only counts the processes: "0" or "0,1"."""
    return ",".join(str(i) for i in range(ctx.settings.train_processes))


def _train_flags(s: DemoSettings, epochs: float, lr: float) -> list:
    """Demo-sized overrides of the recipe's flags (the last occurrence of a flag wins): the epochs and learning rate
    of a model this small, no gradient checkpointing (activations are tiny), batches of similar lengths, a
    checkpoint every 200 steps (half a minute of stage 2; each costs about 0.2 s) so an interrupted run resumes, a
    log line every 10 steps."""
    return ["--num_train_epochs", epochs, "--learning_rate", lr, "--gradient_checkpointing", "False",
            "--length_group_steps", s.length_group_steps, "--save_steps", 200, "--save_total_limit", 1,
            "--logging_steps", 10, "--seed", s.train_seed]


def _loss_summary(script: str, output: str) -> str:
    losses = _losses(output)
    return f"{script}, loss {losses[0]:.2f} → {losses[-1]:.2f}" if losses else script


def step_stage1(ctx: Context) -> str:
    s = ctx.settings
    env = _train_env(ctx, s.stage1_batch, PRETRAIN_DATA=ctx.data / "train" / "pretrain.json",
                     PRETRAIN_IMAGES=ctx.data / "train", OUTPUT_DIR=ctx.pretrain_out,
                     LOGGING_DIR=ctx.out / "runs" / "stage1")
    output = ctx.run("stage1", ["bash", REPO_DIR / "scripts" / "pretrain.sh", _process_list(ctx), s.projector,
                                *_train_flags(s, s.stage1_epochs, s.stage1_lr),
                                "--group_by_length", "True", "--mm_projector_lr", s.stage1_lr], env)
    if not (ctx.pretrain_out / "mm_projector.bin").is_file():
        raise StepFailed(f"scripts/pretrain.sh finished without writing {ctx.pretrain_out / 'mm_projector.bin'}")
    return _loss_summary("scripts/pretrain.sh", output)


def step_export(ctx: Context) -> str:
    ctx.run("export", [ctx.python, "-m", "xmodelvlm.train.export_stage1", "--model_name_or_path", ctx.lm,
                       "--vision_tower", ctx.clip, "--pretrain_mm_mlp_adapter", ctx.pretrain_out / "mm_projector.bin",
                       "--output_dir", ctx.stage1])
    return f"LM + tower + stage-1 projector → {ctx.stage1.relative_to(ctx.out)}"


def step_stage2(ctx: Context) -> str:
    s = ctx.settings
    env = _train_env(ctx, s.stage2_batch, PROJECTOR_PATH=ctx.pretrain_out / "mm_projector.bin",
                     FINETUNE_DATA=ctx.data / "train" / "instruct.json", FINETUNE_IMAGES=ctx.data / "train",
                     OUTPUT_DIR=ctx.stage2, LOGGING_DIR=ctx.out / "runs" / "stage2")
    output = ctx.run("stage2", ["bash", REPO_DIR / "scripts" / "finetune.sh", _process_list(ctx), s.projector,
                                *_train_flags(s, s.stage2_epochs, s.stage2_lr), "--mm_projector_lr",
                                s.stage2_projector_lr, "--cache_samples", "True"], env)
    if not (ctx.stage2 / "model.safetensors").is_file():
        raise StepFailed(f"scripts/finetune.sh finished without writing {ctx.stage2 / 'model.safetensors'}")
    return _loss_summary("scripts/finetune.sh", output)


HEADLINE = {"pope": ("pope_f1", "f1", "POPE F1"), "gqa": ("gqa_accuracy", "accuracy", "GQA accuracy"),
            "mme": ("mme_perception", "perception", "MME perception")}


def metrics_path(ctx: Context, bench: str, checkpoint: Path) -> Path:
    """Where scripts/eval/<bench>.sh writes its metrics (OUTPUT_ROOT/<bench>/<model name = folder name>)."""
    return ctx.eval_root / bench / checkpoint.name / "metrics.json"


def eval_outputs(ctx: Context, bench: str, checkpoint: Path) -> list[Path]:
    return [ctx.eval_root / bench / checkpoint.name, ctx.eval_root / "answers" / bench / checkpoint.name]


def make_eval_step(bench: str, stage: str) -> Callable[[Context], str]:
    def step(ctx: Context) -> str:
        checkpoint = ctx.stage1 if stage == "stage1" else ctx.stage2
        conv_mode = ctx.settings.stage1_conv_mode if stage == "stage1" else "v1"
        env = ctx.env(**ctx.eval_devices(), CPU_CHUNKS=1, BATCH_SIZE=ctx.settings.eval_batch, CONV_MODE=conv_mode,
                      OUTPUT_ROOT=ctx.eval_root, DTYPE="float32")
        ctx.run(f"eval{stage[-1]}-{bench}", ["bash", REPO_DIR / "scripts" / "eval" / f"{bench}.sh", checkpoint,
                                             ctx.eval_data], env)
        key, metric, title = HEADLINE[bench]
        value = read_metric(ctx, bench, checkpoint)
        return f"scripts/eval/{bench}.sh ({conv_mode} prompts): {title} {round(value, 2):.2f}"  # as results.json
    return step


def demo_question(ctx: Context) -> dict:
    """A held-out GQA question for the inference demo: the first open ("query") one, with its image."""
    ground_truth = json.loads((ctx.eval_data / "gqa" / "data" / "testdev_balanced_questions.json").read_text())
    qid, entry = next((k, v) for k, v in ground_truth.items() if v["types"]["structural"] == "query")
    image = ctx.eval_data / "gqa" / "data" / "images" / f"{entry['imageId']}.png"
    return {"question_id": qid, "image": str(image), "question": entry["question"], "answer": entry["answer"]}


def step_inference(ctx: Context) -> str:
    q = demo_question(ctx)
    prompt = q["question"] + SHORT_ANSWER_SUFFIX
    answer_file = ctx.logs / "inference.stdout"
    ctx.run("inference", [ctx.python, REPO_DIR / "inference.py", "--model-path", ctx.stage2, "--image-file", q["image"],
                          "--prompt", prompt, "--max-new-tokens", 32, "--device", ctx.device],
            ctx.env(**ctx.eval_devices()), stdout_file=answer_file)
    record = {**q, "prompt": prompt, "model_answer": answer_file.read_text(encoding="utf-8").strip()}
    atomic_write_json(ctx.out / "inference.json", record)
    return f"{Path(q['image']).name}: {q['question']} → {record['model_answer']!r} (truth: {q['answer']!r})"


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    body: Callable[[Context], str]                       # does the work; returns a one-line summary
    deps: tuple[str, ...] = ()
    settings: Callable[[DemoSettings], dict] = lambda s: {}  # what its result depends on besides its deps
    outputs: Callable[[Context], list[Path]] = lambda ctx: []  # removed before a rebuild from scratch
    exclusive: bool = False  # runs alone, with every job's threads (`jobs` x `ctx.threads`)


def _eval_steps(stage: str) -> tuple[Step, ...]:
    number = stage[-1]
    return tuple(
        Step(f"eval{number}-{bench}", f"{'stage 1 alone' if number == '1' else 'after stage 2'}: {bench.upper()}",
             make_eval_step(bench, stage), deps=("export",) if number == "1" else ("stage2",),
             settings=(lambda s: s.pick("eval_batch", "stage1_conv_mode")) if number == "1"
             else (lambda s: s.pick("eval_batch")),
             outputs=lambda c, bench=bench, stage=stage: eval_outputs(c, bench, getattr(c, stage)))
        for bench in BENCHMARKS)


def _unless_off(s: DemoSettings, name: str) -> dict:
    """A setting for a step's record only when it is on: a setting added at its neutral value keeps the records
    of earlier runs valid, so their steps are still reused."""
    return {name: getattr(s, name)} if getattr(s, name) else {}


# In priority order: when several steps are ready, the first listed starts first (stage 2 before stage 1's evals:
# it is the long pole).
STEPS: tuple[Step, ...] = (
    # the generator's version too: data drawn by an older generator is drawn again, and so is what is built on it
    Step("data", "synthetic data", step_data,
         settings=lambda s: {**s.pick("seed", "num_train", "num_eval", "image_size"),
                             "generator_version": GENERATOR_VERSION},
         outputs=lambda c: [c.data]),
    Step("tokenizer", "tokenizer", step_tokenizer, ("data",),
         lambda s: {**s.pick("vocab_size"), **_unless_off(s, "prompt_pieces")},
         lambda c: [c.tokenizer]),
    Step("clip", "CLIP tower", step_clip, ("data",),
         lambda s: {**s.pick("seed", "clip_patch", "clip_steps", "clip_batch", "clip_lr", "clip_located_phrases",
                             "clip_aux_head", "clip_max_seconds"), **_unless_off(s, "clip_isotropy_weight")},
         lambda c: [c.clip], exclusive=True),
    Step("lm", "language model", step_lm, ("data", "tokenizer"),
         lambda s: {**s.pick("seed", "lm_hidden", "lm_intermediate", "lm_layers", "lm_heads", "lm_kv_heads",
                             "lm_warmup_steps", "lm_warmup_batch", "lm_warmup_lr", "lm_corpus", "length_group_steps"),
                    **({"grid_side": lm_grid_side(s)} if lm_grid_side(s) else {}),
                    **({"lm_scenes": s.lm_scenes} if s.lm_corpus == "scenes" else {}),
                    **({"lm_init_std": s.lm_init_std} if s.lm_init_std != LLAMA_INIT_STD else {})},
         lambda c: [c.lm],
         exclusive=True),
    Step("stage1", "stage 1 training", step_stage1, ("data", "clip", "lm"),
         lambda s: s.pick("projector", "stage1_batch", "stage1_lr", "stage1_epochs", "length_group_steps",
                          "train_processes", "train_seed"),
         lambda c: [c.pretrain_out, c.out / "runs" / "stage1"], exclusive=True),
    Step("stage2", "stage 2 training", step_stage2, ("stage1",),
         lambda s: s.pick("stage2_batch", "stage2_lr", "stage2_projector_lr", "stage2_epochs", "length_group_steps",
                          "train_processes", "train_seed"),
         lambda c: [c.stage2, c.out / "runs" / "stage2"], exclusive=True),
    Step("export", "stage-1 checkpoint", step_export, ("stage1",), outputs=lambda c: [c.stage1]),
    *_eval_steps("stage2"),
    *_eval_steps("stage1"),
    Step("inference", "inference.py", step_inference, ("stage2",), outputs=lambda c: [c.out / "inference.json"]),
)
STEP_NAMES = tuple(step.name for step in STEPS)
# the order the progress lines are numbered in (the pipeline's logical order)
DISPLAY_ORDER = ("data", "tokenizer", "clip", "lm", "stage1", "export", "eval1-pope", "eval1-gqa", "eval1-mme",
                 "stage2", "eval2-pope", "eval2-gqa", "eval2-mme", "inference")


# ---------------------------------------------------------------------------------------------------------------
# Scheduling and reuse


class Pipeline:
    """Runs `steps` under `ctx.out`: plans what to reuse / resume / build, then runs the rest `jobs` at a time as
    their dependencies finish, one progress line per step."""

    def __init__(self, ctx: Context, steps: tuple[Step, ...] = STEPS, jobs: int = 1,
                 echo: Callable[[str], None] | None = None, interactive: bool = False,
                 display_order: tuple[str, ...] | None = None):
        self.ctx = ctx
        self.steps = {step.name: step for step in steps}
        self.order = [step.name for step in steps]
        self.jobs = max(1, jobs)
        self.echo = echo or (lambda line: print(line, flush=True))
        self.interactive = interactive
        shown = [n for n in (display_order or ()) if n in self.steps] + [n for n in self.order
                                                                          if n not in (display_order or ())]
        self.number = {name: i + 1 for i, name in enumerate(shown)}
        self.width = max(len(step.title) for step in steps)
        for step in steps:
            unknown = [d for d in step.deps if d not in self.steps]
            if unknown:
                raise ValueError(f"step {step.name} depends on unknown {unknown}")

    # ---- state files ----
    def state_path(self, name: str) -> Path:
        return self.ctx.out / STATE_DIR / f"{name}.json"

    def read_state(self, name: str) -> dict:
        try:
            state = json.loads(self.state_path(name).read_text())
            return state if isinstance(state, dict) else {}
        except (OSError, json.JSONDecodeError):
            return {}

    def write_state(self, name: str, status: str, **extra) -> None:
        atomic_write_json(self.state_path(name), {"status": status, "settings": self.settings_of(name), **extra})

    def settings_of(self, name: str) -> dict:
        return json.loads(json.dumps(self.steps[name].settings(self.ctx.settings)))  # as stored in JSON

    def ancestors(self, name: str) -> list[str]:
        seen: list[str] = []
        stack = list(self.steps[name].deps)
        while stack:
            dep = stack.pop()
            if dep not in seen:
                seen.append(dep)
                stack.extend(self.steps[dep].deps)
        return [n for n in self.order if n in seen]

    def is_done(self, name: str) -> bool:
        state = self.read_state(name)
        return state.get("status") == "done" and state.get("settings") == self.settings_of(name)

    # ---- planning ----
    def plan(self, fresh: bool = False, from_step: str | None = None) -> dict[str, str]:
        """{step: "reuse" | "resume" | "build"} (see the module docstring)."""
        if from_step is not None:
            if from_step not in self.steps:
                raise UserError(f"--from {from_step}: no such step; steps: {', '.join(self.order)}")
            missing = [dep for dep in self.ancestors(from_step) if not self.is_done(dep)]
            if missing:
                raise UserError(f"--from {from_step} needs step '{missing[0]}' finished first (with the same "
                                f"settings), and it is not; run without --from to build it")
        actions: dict[str, str] = {}
        for name in self._topological():
            step = self.steps[name]
            state = self.read_state(name)
            same = state.get("settings") == self.settings_of(name)
            forced = fresh or name == from_step or any(actions[d] != "reuse" for d in step.deps)
            if forced or not same:
                actions[name] = "build"
            elif state.get("status") == "done":
                actions[name] = "reuse"
            elif state.get("status") == "started":
                actions[name] = "resume"
            else:
                actions[name] = "build"
        return actions

    def _topological(self) -> list[str]:
        done: list[str] = []
        while len(done) < len(self.order):
            progressed = False
            for name in self.order:
                if name not in done and all(d in done for d in self.steps[name].deps):
                    done.append(name)
                    progressed = True
            if not progressed:
                raise ValueError("the steps' dependencies form a cycle")
        return done

    # ---- running ----
    def label(self, name: str) -> str:
        return f"[{self.number[name]:>2}/{len(self.steps)}] {self.steps[name].title:<{self.width}}"

    def run(self, fresh: bool = False, from_step: str | None = None) -> dict[str, str]:
        """Run the plan; returns it. Raises `StepFailed` (after stopping the other running steps) when one fails."""
        actions = self.plan(fresh, from_step)
        finished = {name for name, action in actions.items() if action == "reuse"}
        for name in sorted(finished, key=self.number.get):
            self.echo(f"{self.label(name)}  reused ({self.read_state(name).get('summary', 'done')})")
        pending = [name for name in self.order if name not in finished]
        running: dict[str, tuple[threading.Thread, float, dict]] = {}
        failure: tuple[str, BaseException] | None = None
        try:
            while pending or running:
                for name in list(pending):
                    if failure or len(running) >= self.jobs or any(self.steps[r].exclusive for r in running):
                        break
                    if all(dep in finished for dep in self.steps[name].deps):
                        if self.steps[name].exclusive and running:
                            break  # it waits for the running ones, and nothing starts before it
                        pending.remove(name)
                        running[name] = self._start(name, actions[name])
                time.sleep(0.2)
                for name, (thread, t0, box) in list(running.items()):
                    if thread.is_alive():
                        continue
                    del running[name]
                    self._clear_status()
                    if "error" in box:
                        if failure is None:
                            failure = (name, box["error"])
                            self.ctx.stop_all()
                        continue
                    took = time.time() - t0
                    self.write_state(name, "done", seconds=round(took, 2), summary=box["summary"])
                    finished.add(name)
                    resumed = "resumed; " if actions[name] == "resume" else ""
                    self.echo(f"{self.label(name)} {took:6.1f} s  {resumed}{box['summary']}")
                if failure and not running:
                    break
                self._show_status(running)
        except KeyboardInterrupt:
            self._clear_status()
            self.ctx.stop_all()
            for thread, _, _ in running.values():
                thread.join(timeout=15)
            raise
        if failure:
            name, error = failure
            if isinstance(error, StepFailed):
                raise StepFailed(f"step '{name}' failed: {error}", error.exit_code)
            if isinstance(error, UserError):
                raise StepFailed(f"step '{name}': {error}", 2)
            raise StepFailed(f"step '{name}' failed: {type(error).__name__}: {error}")
        return actions

    def _start(self, name: str, action: str) -> tuple[threading.Thread, float, dict]:
        if action == "build":
            for path in self.steps[name].outputs(self.ctx):
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        self.write_state(name, "started")
        box: dict = {}
        threads = self.ctx.threads * (self.jobs if self.steps[name].exclusive else 1)

        def work() -> None:
            self.ctx.set_step_threads(threads)
            try:
                box["summary"] = self.steps[name].body(self.ctx)
            except BaseException as exc:  # reported by the scheduler
                box["error"] = exc

        thread = threading.Thread(target=work, name=f"step-{name}", daemon=True)
        thread.start()
        return thread, time.time(), box

    def _show_status(self, running: dict) -> None:
        if not self.interactive or not running:
            return
        parts = []
        for name, (_, t0, _) in sorted(running.items(), key=lambda item: self.number[item[0]]):
            hint = live_hint(self.ctx.log_path(name))
            parts.append(f"{name} {time.time() - t0:.0f}s{' ' + hint if hint else ''}")
        line = "  … " + " | ".join(parts)
        sys.stdout.write("\r\033[K" + line[:max(20, shutil.get_terminal_size().columns - 1)])
        sys.stdout.flush()

    def _clear_status(self) -> None:
        if self.interactive:
            sys.stdout.write("\r\033[K")
            sys.stdout.flush()


# ---------------------------------------------------------------------------------------------------------------
# Results


def read_metric(ctx: Context, bench: str, checkpoint: Path) -> float:
    path = metrics_path(ctx, bench, checkpoint)
    try:
        return float(json.loads(path.read_text())[HEADLINE[bench][1]])
    except (OSError, ValueError, KeyError, TypeError):
        raise StepFailed(f"{path} is missing or has no '{HEADLINE[bench][1]}'; rerun with --from "
                         f"eval{'1' if checkpoint == ctx.stage1 else '2'}-{bench}") from None


def collect_results(ctx: Context, seconds: float) -> dict:
    results = {stage: {HEADLINE[b][0]: round(read_metric(ctx, b, getattr(ctx, stage)), 2) for b in BENCHMARKS}
               for stage in ("stage1", "stage2")}
    results["seconds"] = round(seconds, 1)
    return results


def results_table(results: dict) -> str:
    lines = ["| metric         | stage 1 alone | after stage 2 |", "|:---------------|--------------:|--------------:|"]
    for bench in BENCHMARKS:
        key, _, title = HEADLINE[bench]
        lines.append(f"| {title:<14} | {results['stage1'][key]:>13.2f} | {results['stage2'][key]:>13.2f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# CLI


def parse_args(argv: list[str] | None):
    parser = ArgumentParser(prog="python -m xmodelvlm.demo.run",
                            description="Run the whole system on synthetic data on a CPU (see the module docstring).",
                            epilog=f"steps: {', '.join(DISPLAY_ORDER)}")
    parser.add_argument("out_dir", nargs="?", default=DEFAULT_OUT, help=f"where everything goes (default ./{DEFAULT_OUT})")
    parser.add_argument("--quick", action="store_true", help="the shortened CI run: less data, fewer steps")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--fresh", action="store_true", help="rebuild every step")
    group.add_argument("--from", dest="from_step", choices=DISPLAY_ORDER, metavar="STEP",
                       help="rebuild STEP and the steps that depend on it (the steps it needs must be finished)")
    parser.add_argument("--jobs", type=int, default=None, help="steps run side by side (default: the number of cores)")
    parser.add_argument("--threads", type=int, default=1, help="threads per process (default 1)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where models train and answer (default cpu; the time bar is for 2 CPU cores)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                        help="override one of the demo's settings (repeatable), e.g. --set stage2_epochs=3; names: "
                             + ", ".join(f.name for f in dataclasses.fields(DemoSettings)))
    args = parser.parse_args(argv)
    if args.jobs is not None and args.jobs < 1 or args.threads < 1:
        parser.error("--jobs and --threads must be at least 1")
    return args


# the text settings that take one of a few words: checked up front, not when their step runs minutes later
SETTING_CHOICES = {"clip_aux_head": AUX_HEADS, "lm_corpus": CORPORA}


def apply_overrides(settings: DemoSettings, overrides: list[str]) -> DemoSettings:
    """`settings` with each "name=value" of `overrides` applied, the value parsed as the field's type."""
    fields = {f.name: f for f in dataclasses.fields(DemoSettings)}
    changes: dict = {}
    for item in overrides:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or name not in fields:
            raise UserError(f"--set {item!r}: expected NAME=VALUE with NAME one of: {', '.join(fields)}")
        kind = type(getattr(DEFAULT, name))
        try:
            changes[name] = kind(text) if kind is not bool else {"true": True, "false": False}[text.lower()]
        except (ValueError, KeyError):
            raise UserError(f"--set {item!r}: {name} takes a{'n' if kind is int else ''} {kind.__name__}") from None
        if name in SETTING_CHOICES and changes[name] not in SETTING_CHOICES[name]:
            raise UserError(f"--set {item!r}: {name} takes one of: {', '.join(SETTING_CHOICES[name])}")
    return dataclasses.replace(settings, **changes)


def prepare_out_dir(path: str) -> Path:
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"OUT_DIR {out} is a file, not a directory; pass a directory (it is created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create OUT_DIR {out}: {exc.strerror or exc}") from None
    return out.resolve()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    jobs = args.jobs or os.cpu_count() or 1
    settings = resolve_train_processes(apply_overrides(QUICK if args.quick else DEFAULT, args.overrides), jobs,
                                       args.device)
    out = prepare_out_dir(args.out_dir)
    ctx = Context(out, settings, threads=args.threads, quick=args.quick, device=args.device)
    where = "CPU" if args.device == "cpu" else "GPU"
    print(f"Xmodel-VLM demo{' (--quick)' if args.quick else ''}: synthetic data → stage 1 → stage 2 → evaluation → "
          f"inference on the {where}, in {out}\n({jobs} step(s) at a time, {args.threads} thread(s) each; "
          f"logs in {ctx.logs})", flush=True)
    t0 = time.time()
    try:
        Pipeline(ctx, jobs=jobs, interactive=sys.stdout.isatty(), display_order=DISPLAY_ORDER).run(
            fresh=args.fresh, from_step=args.from_step)
        results = collect_results(ctx, time.time() - t0)
    except StepFailed as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    atomic_write_json(out / "results.json", results)
    inference = json.loads((out / "inference.json").read_text())
    print(f"\n{results_table(results)}\n")
    print(f"inference.py on a held-out image ({inference['image']}):")
    print(f"  question:     {inference['question']}")
    print(f"  answer:       {inference['model_answer']}")
    print(f"  ground truth: {inference['answer']}\n")
    print(f"done in {results['seconds']:.0f} s; results in {out / 'results.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main) or 0)
