"""Stage 1 alone, then how loud shape is in what stage 2 will start from (not a test).

    python bench/demo_stage1_screen.py OUT LM_DIR CLIP_DIR DATA_DIR [EPOCHS=1] [LR=2e-3]

Trains the demo's stage 1 (projector only, `plain` captions, batch 32, length-grouped, seed 42 or env TRAIN_SEED, one
thread; `bench/demo_variant.py`'s flags, from `bench/demo_common.py`) through the real `train.py` entry point on
DATA_DIR with the given LM and tower, assembles the stage-1 checkpoint with `xmodelvlm.train.export_stage1`, and runs `bench/demo_shape_path.py` on it. About a minute per epoch-and-probe, so
LM warm-ups, towers and stage-1 settings can be compared before paying for a stage 2 (BENCHMARKS.md, "Why naming a
shape fails").
"""
import dataclasses
import subprocess
import sys
from pathlib import Path

import torch

from demo_common import stage1_flags, train_flags
from xmodelvlm.demo.run import DEFAULT

out, lm, clip, data = (Path(x) for x in sys.argv[1:5])
epochs, lr = (sys.argv[5:] + ["1", "2e-3"][len(sys.argv) - 5:])[:2]
settings = dataclasses.replace(DEFAULT, stage1_epochs=float(epochs), stage1_lr=float(lr))
torch.set_num_threads(1)
from xmodelvlm.train.train import main as train_main  # noqa: E402  (after the thread setting)

train_main(train_flags(lm, clip, settings, "cpu", workers=0) + stage1_flags(data, out / "stage1", settings))
subprocess.run([sys.executable, "-m", "xmodelvlm.train.export_stage1", "--model_name_or_path", str(lm),
                "--vision_tower", str(clip), "--pretrain_mm_mlp_adapter", str(out / "stage1" / "mm_projector.bin"),
                "--output_dir", str(out / "stage1_full")], check=True, capture_output=True)
subprocess.run([sys.executable, str(Path(__file__).with_name("demo_shape_path.py")), str(out / "stage1_full"),
                str(data), "800"], check=True)
