"""What one training sample costs to build (not a test): `LazySupervisedDataset.__getitem__` timed, split into
tokenizing + masking (`encode`) and reading + preprocessing the image (`load_pixels`).

    python bench/bench_data_loading.py DEMO_OUT_DIR [SAMPLES=2000] [REPEATS=3]

On a finished demo run's stage-2 data, LM (tokenizer) and tower (image processor), built through train.py's own
`build_model` and `make_supervised_data_module`, one thread. Prints the best of REPEATS passes over the first
SAMPLES samples, in milliseconds per sample. To compare two versions of the code in one run, call it once per
checkout with PYTHONPATH set to that checkout (BENCHMARKS.md gives the command).
"""
import sys
import time
from pathlib import Path

import torch

out = Path(sys.argv[1])
samples, repeats = (int(x) for x in (sys.argv[2:] + ["2000", "3"][len(sys.argv) - 2:])[:2])
torch.set_num_threads(1)

from xmodelvlm.data.dataset import make_supervised_data_module  # noqa: E402
from xmodelvlm.train.arguments import parse_arguments  # noqa: E402
from xmodelvlm.train.model_setup import build_model, get_vlm  # noqa: E402

argv = ["--model_name_or_path", str(out / "models" / "lm"), "--vision_tower", str(out / "models" / "clip"),
        "--mm_projector_type", "xdpnetv10_1", "--mm_vision_select_layer", "-2", "--image_aspect_ratio", "pad",
        "--use_cpu", "True", "--bf16", "False", "--version", "v1", "--output_dir", "/tmp/bench_data_loading",
        "--data_path", str(out / "data" / "train" / "instruct.json"), "--image_folder", str(out / "data" / "train"),
        "--report_to", "none"]
model_args, data_args, training_args = parse_arguments(argv)
model, tokenizer, image_processor = build_model(model_args, data_args, training_args)
vlm = get_vlm(model)
dataset = make_supervised_data_module(tokenizer, image_processor, data_args, version="v1",
                                      num_image_tokens=vlm.num_image_tokens, model_max_length=2048,
                                      model_cfg=vlm.config)["train_dataset"]
n = min(samples, len(dataset))
paths = [dataset.samples.entry(i)[1] for i in range(n)]


def best_ms(fn) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        times.append(time.perf_counter() - t0)
    return 1000 * min(times) / n


whole = best_ms(lambda i: dataset[i])
encode = best_ms(dataset.encode)
pixels = best_ms(lambda i: paths[i] and dataset.load_pixels(paths[i]))
print(f"{n} samples, best of {repeats}: __getitem__ {whole:.2f} ms/sample = encode {encode:.2f} + "
      f"load_pixels {pixels:.2f} (+ the rest)", flush=True)
