#!/usr/bin/env python
"""Ask Xmodel-VLM about an image: see `python inference.py --help` (code in xmodelvlm/serve/cli.py)."""
from xmodelvlm.serve.cli import entry

if __name__ == "__main__":
    entry()
