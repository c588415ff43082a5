"""Run demo variants side by side and collect what each one learns (how the demo's defaults were chosen; not a test).

    python bench/demo_sweep.py ROOT VARIANTS.json cpu|cuda PARALLEL

VARIANTS.json: {"name": ["stage2_epochs=4", "clip_steps=0", ...], ...} (overrides of `xmodelvlm.demo.run.DEFAULT`,
as `--set` takes them). The synthetic data and tokenizer are built once per `num_train` and `image_size` under ROOT/base, then each
variant runs as `bench/demo_variant.py` (its own process), PARALLEL at a time; results in ROOT/results.jsonl, logs
in ROOT/<name>.log. On a GPU a variant takes a minute or two and what it learns depends on its optimizer steps, not
the device, which is what made a sweep affordable; CPU times per step are in BENCHMARKS.md.
"""
import json, sys, subprocess, time, os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
root, variants, device, par = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text()), sys.argv[3], int(sys.argv[4])
from xmodelvlm.demo import synthetic_data, tiny_tokenizer
from xmodelvlm.demo.run import DEFAULT, apply_overrides
base = root / "base"
t0 = time.time()
for n, size in sorted({(apply_overrides(DEFAULT, ov).num_train, apply_overrides(DEFAULT, ov).image_size)
                       for ov in variants.values()}):
    s = apply_overrides(DEFAULT, [f"num_train={n}", f"image_size={size}"]
                        + [o for ov in variants.values() for o in ov if o.startswith("num_eval=")][:1])
    if not (base / f"tok{n}px{size}").exists():
        synthetic_data.generate(base / f"data{n}px{size}", seed=s.seed, num_train=n, num_eval=s.num_eval, image_size=size, quiet=True)
        tiny_tokenizer.train_tokenizer(tiny_tokenizer.dataset_texts(base / f"data{n}px{size}"), base / f"tok{n}px{size}",
                                       vocab_size=s.vocab_size)
print(f"data ready {time.time()-t0:.0f}s", flush=True)
def one(item):
    name, ov = item
    with open(root / f"{name}.log", "wb") as log:
        rc = subprocess.run([sys.executable, str(Path(__file__).parent / "demo_variant.py"), str(root), str(base), name,
                             json.dumps(ov), device], stdout=log, stderr=subprocess.STDOUT).returncode
    print(f"{name} rc={rc} at {time.time()-t0:.0f}s", flush=True)
with ThreadPoolExecutor(par) as pool:
    list(pool.map(one, variants.items()))
