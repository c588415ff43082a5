"""The package's public names (the seed's) and what importing it costs."""
from __future__ import annotations

import subprocess
import sys

import pytest

import xmodelvlm


def test_public_names_resolve_to_their_definitions():
    from xmodelvlm.data.conversation import conv_templates
    from xmodelvlm.model.builder import load_pretrained_model

    assert xmodelvlm.conv_templates is conv_templates
    assert xmodelvlm.load_pretrained_model is load_pretrained_model
    for name in xmodelvlm.__all__:
        assert getattr(xmodelvlm, name) is not None and name in dir(xmodelvlm)
    with pytest.raises(AttributeError, match="no attribute 'load_pretrained'"):
        xmodelvlm.load_pretrained  # noqa: B018 - a near miss is an AttributeError, not a silent None


@pytest.mark.parametrize("module", ["xmodelvlm.eval.merge", "xmodelvlm.eval.report", "xmodelvlm.eval.scorers.pope"])
def test_answer_merging_and_scoring_start_without_torch(module):
    # each eval script runs them in a process of their own: importing torch there cost ~4 s per process
    code = f"import sys, {module}; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
