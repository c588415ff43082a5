"""One demo variant in one process (used by bench/demo_sweep.py; not a test).

    python bench/demo_variant.py OUT BASE NAME '["stage2_epochs=4", ...]' cpu|cuda

The demo's settings (`xmodelvlm.demo.run.DEFAULT` with the overrides) on the data and tokenizer already in
BASE/data<num_train>px<image_size> and BASE/tok<num_train>px<image_size>: the tiny CLIP (`pretrain_tiny_clip`; env
CLIP_DIR=... reuses a trained one instead), the LM warm-up (`make_tiny_lm`; env LM_DIR=... reuses one), stage 1 and stage 2 through the real `train.py` entry point
(`xmodelvlm.train.train.main`, the flags of scripts/pretrain.sh / finetune.sh with the demo's overrides, no
checkpoints; env TRAIN_SEED=... sets both stages' `--seed`, default the `train_seed` setting (42, the Trainer's own);
env VISION_LAYER=... their `--mm_vision_select_layer`, default -2; env WEIGHT_DECAY=... their `--weight_decay`,
default 0; env STAGE2_SCHEDULER=... stage 2's `--lr_scheduler_type`, default the recipe's cosine
(STAGE2_SCHEDULER_KWARGS='{"power": 2}' its `--lr_scheduler_kwargs`); env LM_GROUP_STEPS=... the LM warm-up's own `--length-group-steps`, default the demo's; env STAGE2_FROM=... a
VLM checkpoint that stage 2 continues instead of stage 1's output, stage 1 skipped), then POPE / GQA / MME on
stage 2 with the real answering engine and scorers. Skips the shell scripts,
the stage-1 evals and the per-step Python start-up of `scripts/demo.sh`, so a variant costs its compute only.
Appends one JSON line to OUT/results.jsonl: scores, GQA accuracy per question type, tower probes, step times.
"""
import json, sys, time, os, dataclasses
from pathlib import Path
t0 = time.time()
out, base, name, ov, device = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4]), sys.argv[5]
import torch
torch.set_num_threads(int(os.environ.get("THREADS", "1")))
from xmodelvlm.demo.run import DEFAULT, apply_overrides, lm_grid_side, SHORT_ANSWER_SUFFIX
from xmodelvlm.demo.tiny_clip import pretrain_tiny_clip
from xmodelvlm.demo.tiny_lm import make_tiny_lm
s = apply_overrides(DEFAULT, ov)
run = out / name; run.mkdir(parents=True, exist_ok=True)
data = base / f"data{s.num_train}px{s.image_size}"; tok = base / f"tok{s.num_train}px{s.image_size}"
times = {}
def lap(k, t=[time.time()]):
    times[k] = round(time.time() - t[0], 1); t[0] = time.time()
clip = Path(os.environ["CLIP_DIR"]) if os.environ.get("CLIP_DIR") else run / "clip"
if not os.environ.get("CLIP_DIR"): pretrain_tiny_clip(data / "train" / "pretrain.json", data / "train", clip, image_size=s.image_size, patch_size=s.clip_patch, located_phrases=s.clip_located_phrases, aux_head=s.clip_aux_head, isotropy_weight=s.clip_isotropy_weight, steps=s.clip_steps, batch_size=s.clip_batch,
                   lr=s.clip_lr, seed=s.seed, num_threads=int(os.environ.get("THREADS", "1")), quiet=True, device=device)
lap("clip")
lm = Path(os.environ["LM_DIR"]) if os.environ.get("LM_DIR") else run / "lm"
lmst = {} if os.environ.get("LM_DIR") else make_tiny_lm(data, tok, lm, hidden=s.lm_hidden, intermediate=s.lm_intermediate, layers=s.lm_layers, heads=s.lm_heads,
                    kv_heads=s.lm_kv_heads, steps=s.lm_warmup_steps, batch_size=s.lm_warmup_batch, lr=s.lm_warmup_lr,
                    seed=s.seed, device=device, corpus=s.lm_corpus, length_group_steps=int(os.environ.get("LM_GROUP_STEPS", s.length_group_steps)),
                    grid_side=lm_grid_side(s), scenes=s.lm_scenes, init_std=s.lm_init_std)
lap("lm")
from xmodelvlm.train.train import main as train_main
from demo_common import stage1_flags, train_flags
common = train_flags(lm, clip, s, device)
stage2_from = os.environ.get("STAGE2_FROM")  # a VLM checkpoint stage 2 continues (stage 1 skipped)
if not stage2_from:
    train_main(common + stage1_flags(data, run / "s1", s))
lap("stage1")
start = (["--model_name_or_path", stage2_from] if stage2_from
         else ["--pretrain_mm_mlp_adapter", str(run / "s1" / "mm_projector.bin")])
train_main(common + ["--version", "v1", "--data_path", str(data / "train" / "instruct.json"), "--image_folder", str(data / "train"),
           *start, "--group_by_modality_length", "True",
           "--output_dir", str(run / "s2"), "--num_train_epochs", str(s.stage2_epochs),
           "--per_device_train_batch_size", str(s.stage2_batch), "--learning_rate", str(s.stage2_lr), "--mm_projector_lr", str(s.stage2_projector_lr), "--cache_samples", "True"]
           + (["--lr_scheduler_type", os.environ["STAGE2_SCHEDULER"]] if os.environ.get("STAGE2_SCHEDULER") else [])
           + (["--lr_scheduler_kwargs", os.environ["STAGE2_SCHEDULER_KWARGS"]] if os.environ.get("STAGE2_SCHEDULER_KWARGS") else []))
lap("stage2")
from xmodelvlm.eval import answer
from xmodelvlm.eval.benchmarks import get_benchmark
from xmodelvlm.eval.scorers.gqa import normalize_gqa_prediction
res = {}
evald = data / "eval"
for bench in ("pope", "gqa", "mme"):
    af = run / f"{bench}.jsonl"
    if af.exists(): af.unlink()
    answer.main(["--model-path", str(run / "s2"), "--bench", bench, "--data-root", str(evald), "--answers-file", str(af),
                 "--batch-size", "100", "--device", device, "--no-progress"])
    met = get_benchmark(bench).score(evald, [af], run / bench)
    res[bench] = {k: round(v, 1) for k, v in met.items() if isinstance(v, (int, float))}
lap("eval")
# per-type GQA accuracy
qs = json.loads((evald / "gqa" / "data" / "testdev_balanced_questions.json").read_text())
by = {}
for line in open(run / "gqa.jsonl"):
    a = json.loads(line); q = qs[a["question_id"]]; t = q["types"]["detailed"]
    by.setdefault(t, []).append(normalize_gqa_prediction(a["text"]) == q["answer"])
rec = {"name": name, "ov": ov, "pope": res["pope"].get("f1"), "gqa": res["gqa"].get("accuracy"),
       "mme": res["mme"].get("perception"), "pope_yes": res["pope"].get("yes_ratio"), "times": times,
       "total": round(time.time() - t0, 1), "lm_loss": lmst.get("final_loss"),
       "clip": json.loads((clip / "clip_pretrain_stats.json").read_text()),
       "gqa_types": {t: round(sum(v) / len(v), 2) for t, v in sorted(by.items())}}
rec["clip"] = {k: rec["clip"].get(k) for k in ("presence_acc", "shape_acc", "position_acc", "color_acc", "count_acc", "patch_acc")}
with open(out / "results.jsonl", "a") as f:
    f.write(json.dumps(rec) + "\n")
print("RESULT", json.dumps(rec), flush=True)
