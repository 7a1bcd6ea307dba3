"""cost.rank_tensors: a stage's parameter tensors on one rank in backprop order, by hand (the
model of tests/cost/test_buckets.py: MHA, SwiGLU, untied, H 2048, FFN 8192)."""

from sp_planner.cost.rank_tensors import layer_tensors, mtp_tensors, stage_extras, stage_tensors
from tests.cost.test_buckets import FC1, FC2, PROJ, QKV, TABLE
from tests.cost.test_dp_overlap import H, MODEL


def test_a_layers_tensors_in_backprop_order():
    # fc2, fc1 with the pre-MLP norm (H), qkv with the input norm (H), proj; no expert tensor.
    assert layer_tensors(MODEL, 1) == ((FC2, FC1, QKV, PROJ), ())
    assert stage_tensors(MODEL, 1, 1, 1, 3, None) == (((FC2, FC1, QKV, PROJ),) * 3, ())


def test_each_stage_holds_its_own_non_layer_tensors():
    # The output layer (untied) and the final norm (H) open the last stage's walk, the embedding
    # table ends the first's; a single stage holds both, a middle stage neither.
    assert stage_extras(MODEL, 1, True) == ((TABLE, H), (TABLE,))
    assert stage_extras(MODEL, 1, False, first_stage=True) == ((), (TABLE,))
    assert stage_extras(MODEL, 1, False, first_stage=False, last_stage=True) == ((TABLE, H), ())
    assert stage_extras(MODEL, 1, False, first_stage=False) == ((), ())


def test_no_mtp_tensors_without_mtp():
    assert mtp_tensors(MODEL, 1, 1, 1, True) == ((), ())
