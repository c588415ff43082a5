"""Projector registry (exact names) and XDP's token grouping (SPEC §1)."""
import pytest
import torch
from torch import nn

from xmodelvlm.model.projector import XDPProjector, build_projector


def test_xdp_concatenates_consecutive_tokens_row_major():
    projector = XDPProjector(mm_hidden_size=3, hidden_size=8, stride=4)
    projector.mlp = nn.Identity()  # look at the grouping alone
    features = torch.randn(2, 576, 3)
    grouped = projector(features)
    assert grouped.shape == (2, 144, 12)
    for t in (0, 5, 6, 143):
        assert torch.equal(grouped[1, t], features[1, 4 * t:4 * t + 4].reshape(-1))
    # token 6 is the first strip of grid row 1: patches (1,0)…(1,3), a 1×4 horizontal strip, not a 2×2 block
    grid = torch.arange(576).reshape(24, 24)
    assert grid[1, 0:4].tolist() == list(range(24, 28)) == list(range(4 * 6, 4 * 6 + 4))


def test_xdp_layers_and_state_dict_names():
    projector = build_projector("xdpnetv10_4", 1024, 2048)
    shapes = {k: tuple(v.shape) for k, v in projector.state_dict().items()}
    assert shapes == {"mlp.0.weight": (2048, 4096), "mlp.0.bias": (2048,),
                      "mlp.2.weight": (2048, 2048), "mlp.2.bias": (2048,)}
    assert isinstance(projector.mlp[1], nn.Mish)


@pytest.mark.parametrize("name, tokens", [
    ("xdpnet", 144), ("xdpnetv10_4", 144), ("xdpnetv10_1", 576), ("xdpnetv10_16", 36), ("xdpnetv10_576", 1),
    ("linear", 576), ("mlp2x_gelu", 576), ("ldpnet", 144), ("ldpnetv2", 144),
])
def test_token_counts_and_shapes(name, tokens):
    projector = build_projector(name, 16, 32)
    assert projector.num_tokens(576) == tokens
    out = projector(torch.randn(2, 576, 16))
    assert out.shape == (2, tokens, 32) and torch.isfinite(out).all()


def test_llava_projectors_keep_llava_state_dict_names():
    assert set(build_projector("mlp2x_gelu", 4, 8).state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert set(build_projector("linear", 4, 8).state_dict()) == {"0.weight", "0.bias"}


@pytest.mark.parametrize("name", ["xdp", "xdpnetv10", "xdpnetv10_4x", "mlp2x_gelu_extra", "XDPNET", "ldpnetv3",
                                  "xdpnetv10_0", "linear "])
def test_unknown_names_are_rejected_not_substring_matched(name):
    with pytest.raises(ValueError, match="known: .*ldpnet.*linear.*mlp2x_gelu.*xdpnet"):
        build_projector(name, 8, 8)


def test_xdp_rejects_indivisible_token_count():
    with pytest.raises(ValueError, match="does not divide"):
        build_projector("xdpnetv10_5", 4, 4)(torch.randn(1, 16, 4))
