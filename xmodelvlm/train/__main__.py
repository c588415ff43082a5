"""`python -m xmodelvlm.train ...` — the same as `python train.py ...`."""
from .train import cli

cli()
