"""Two-stage training of Xmodel-VLM (HF Trainer + DeepSpeed): `python train.py` / `python -m xmodelvlm.train`.

Modules: `arguments` (flags, legacy-flag mapping), `model_setup` (starting points, freezing, projector I/O),
`lora` (LoRA/QLoRA, adapter saving, merging), `sampler` (modality/length grouping), `trainer` (the Trainer
subclass), `train` (`main`/`cli`).
"""
