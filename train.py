#!/usr/bin/env python
"""Train Xmodel-VLM: `python train.py --help`, or under `deepspeed` / `torchrun` (see scripts/pretrain.sh).

Same as `python -m xmodelvlm.train`; runs from a checkout without installing the package.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from xmodelvlm.train.train import cli  # noqa: E402

if __name__ == "__main__":
    cli()
