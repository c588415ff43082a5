"""One process with every thread, or one single-threaded process per core? (not a test)

    python bench/bench_cpu_processes.py DEMO_OUT_DIR [STAGE2_STEPS=200] [WARMUP_STEPS=100]

On a finished demo run's data, tokenizer, LM and tower, with 2 cores:
(1) stage 2 through `scripts/finetune.sh` (the demo's flags: batch 16, length-grouped, no checkpoints), STAGE2_STEPS
    steps: one process with 2 threads (`LAUNCHER=python`) against two single-threaded processes
    (`LAUNCHER=torchrun`, GPU_LIST 0,1: DDP over gloo, batch 8 each), wall time of the whole command; then DDP
    with one data-loader worker per process, then the first again (the host's speed drifts);
(2) the tower's CLIP-style training and the LM warm-up, WARMUP_STEPS steps each: one after the other with 2
    threads each, against both at once with 1 thread each.
Everything runs one after the other in this process's children, so the machine should be otherwise idle.
"""
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
out = Path(sys.argv[1])
stage2_steps, warmup_steps = (int(x) for x in (sys.argv[2:] + ["200", "100"][len(sys.argv) - 2:])[:2])
tmp = Path(tempfile.mkdtemp(prefix="bench_cpu_processes_"))


def env(threads: int, **extra) -> dict:
    e = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONPATH=str(REPO),
             TOKENIZERS_PARALLELISM="false")
    e.update({k: str(v) for k, v in extra.items()})
    return e


def run(cmd: list, e: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen([str(c) for c in cmd], env=e, cwd=REPO, stdout=open(log, "wb"), stderr=subprocess.STDOUT)


def wait_all(procs: list) -> None:
    for p in procs:
        if p.wait() != 0:
            sys.exit(f"a command failed (exit {p.returncode}); logs in {tmp}")


def stage2(launcher: str, gpus: str, threads: int, workers: int = 0, tag: str = "") -> float:
    e = env(threads, DEVICE="cpu", LAUNCHER=launcher, DEEPSPEED_CONFIG="none", NUM_WORKERS=workers,
            LM_PATH=out / "models" / "lm", VISION_TOWER=out / "models" / "clip", GLOBAL_BATCH=16, PER_DEVICE_BATCH=16,
            PROJECTOR_PATH=out / "checkpoints" / "pretrain" / "mm_projector.bin",
            FINETUNE_DATA=out / "data" / "train" / "instruct.json", FINETUNE_IMAGES=out / "data" / "train",
            OUTPUT_DIR=tmp / f"stage2_{launcher}_{workers}{tag}", LOGGING_DIR=tmp / "runs")
    t0 = time.time()
    wait_all([run(["bash", REPO / "scripts" / "finetune.sh", gpus, "xdpnetv10_1", "--max_steps", stage2_steps,
                   "--learning_rate", "1e-3", "--mm_projector_lr", "1e-4", "--gradient_checkpointing", "False",
                   "--length_group_steps", 16, "--save_strategy", "no", "--logging_steps", 50, "--report_to", "none"],
                  e, tmp / f"stage2_{launcher}_{workers}{tag}.log")])
    return time.time() - t0


def warmups(threads: int, together: bool) -> float:
    py = sys.executable
    clip = [py, "-m", "xmodelvlm.demo.tiny_clip", "--data", out / "data", "--out", tmp / f"clip{threads}",
            "--image-size", 48, "--patch-size", 16, "--steps", warmup_steps, "--batch-size", 64, "--lr", 1e-3,
            "--threads", threads, "--quiet"]
    lm = [py, "-m", "xmodelvlm.demo.tiny_lm", "--data", out / "data", "--tokenizer", out / "models" / "tokenizer",
          "--out", tmp / f"lm{threads}", "--steps", warmup_steps, "--batch-size", 64, "--lr", 3e-3,
          "--threads", threads, "--length-group-steps", 16]
    t0 = time.time()
    if together:
        wait_all([run(clip, env(threads), tmp / "clip.log"), run(lm, env(threads), tmp / "lm.log")])
    else:
        wait_all([run(clip, env(threads), tmp / "clip.log")])
        wait_all([run(lm, env(threads), tmp / "lm.log")])
    return time.time() - t0


one = stage2("python", "0", 2)
two = stage2("torchrun", "0,1", 1)
two_workers = stage2("torchrun", "0,1", 1, workers=1)
one_again = stage2("python", "0", 2, tag="_again")
print(f"stage 2, {stage2_steps} steps of batch 16: 1 process x 2 threads {one:.1f} s (again at the end: "
      f"{one_again:.1f} s), 2 processes x 1 thread (DDP) {two:.1f} s: {(one + one_again) / 2 / two:.2f}x; the "
      f"same with a data-loader worker each {two_workers:.1f} s", flush=True)
seq = warmups(2, together=False)
par = warmups(1, together=True)
print(f"tower + LM warm-up, {warmup_steps} steps each: one after the other x 2 threads {seq:.1f} s, "
      f"side by side x 1 thread {par:.1f} s: {seq / par:.2f}x", flush=True)
