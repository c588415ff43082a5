"""The launch scripts' batch arithmetic and process counting (scripts/train_common.sh)."""
from __future__ import annotations

import subprocess

import pytest

from train_helpers import REPO


def common(snippet: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", f"source {REPO}/scripts/train_common.sh; {snippet}"], capture_output=True,
                          text=True, timeout=30, env={"PATH": "/usr/bin:/bin", **env})


@pytest.mark.parametrize("global_batch, max_per_device, processes, expected", [
    (64, 16, 4, "16 1"), (64, 16, 1, "16 4"), (64, 16, 8, "8 1"), (32, 8, 4, "8 1"), (32, 8, 2, "8 2"),
    (32, 8, 1, "8 4"), (48, 16, 1, "16 3"), (24, 16, 1, "12 2"), (20, 8, 1, "5 4"),
])
def test_split_batch(global_batch, max_per_device, processes, expected):
    proc = common(f'split_batch {global_batch} {max_per_device} {processes}; echo "$PER_DEVICE $GRAD_ACCUM"')
    assert proc.stdout.strip() == expected
    per_device, accumulation = map(int, expected.split())
    assert per_device * accumulation * processes == global_batch


def test_indivisible_global_batch_is_an_error():
    proc = common("split_batch 64 16 3")
    assert proc.returncode == 2 and proc.stderr.startswith("error: global batch 64 is not divisible by 3")


def test_process_count(tmp_path):
    assert common("GPU_LIST=0,1,2,3; count_processes").stdout.strip() == "4"
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("# two nodes\nworker-1 slots=8\nworker-2 slots=8\n")
    assert common("GPU_LIST=0; count_processes", HOSTFILE=str(hostfile)).stdout.strip() == "16"


def test_positionals_and_passthrough():
    proc = common('parse_positionals 0,1 mlp2x_gelu --max_steps 5 --seed 3; '
                  'echo "$GPU_LIST|$PROJECTOR_TYPE|$VISION_TOWER_TYPE|${EXTRA_ARGS[*]}"')
    assert proc.stdout.strip() == "0,1|mlp2x_gelu|clip|--max_steps 5 --seed 3"
    proc = common('parse_positionals 0 --max_steps 5; echo "$PROJECTOR_TYPE|${EXTRA_ARGS[*]}"')
    assert proc.stdout.strip() == "xdpnetv10_4|--max_steps 5"
    assert common("parse_positionals gpu0").returncode == 2
    assert common("parse_positionals 0 xdpnet siglip").returncode == 2
