"""cli.run_config: the run sp-run's flags describe, and the flags refused in their own terms."""

import pytest

from sp_planner.cli.run_config import config_from_flags, finite_positive
from sp_planner.errors import UserInputError

SHAPE = {"--ulysses": None, "--ring": 2, "--seq-len": "4k", "--batch": None, "--heads": 8, "--kv-heads": None,
         "--head-dim": 64, "--causal": True, "--ring-layout": "zigzag", "--cp-comm": None, "--v-head-dim": None,
         "--softmax-scale": None, "--softcap": None, "--window": None, "--window-kind": None}


def test_the_flags_defaults():
    cfg = config_from_flags(SHAPE, dtype="float32", device="cpu", kernel="auto", iters=0)
    assert (cfg.ulysses, cfg.ring, cfg.seq_len, cfg.batch) == (1, 2, 4096, 1)
    assert (cfg.num_heads, cfg.num_kv_heads, cfg.ring_layout, cfg.cp_comm) == (8, 8, "zigzag", "p2p")
    assert cfg.window is None and cfg.window_kind == "sliding"


@pytest.mark.parametrize("update, message", [
    ({"--heads": None, "--head-dim": None}, "give --heads, --head-dim"),
    ({"--ring": 1}, "--ring-layout zigzag shapes the ring axis"),
    ({"--window-kind": "chunked"}, "--window-kind chunked shapes a local window"),
    ({"--softcap": float("nan")}, "--softcap nan: must be a finite positive number"),
])
def test_flags_that_cannot_run_are_refused_by_name(update, message):
    with pytest.raises(UserInputError, match=message):
        config_from_flags({**SHAPE, **update}, dtype="float32", device="cpu", kernel="auto", iters=0)


def test_finite_positive():
    finite_positive(None, "--softcap")
    finite_positive(50.0, "--softcap")
    with pytest.raises(UserInputError, match="--softcap -1: must be"):
        finite_positive(-1.0, "--softcap")
