"""USP paper Table 5 (arXiv 2405.07719; reference usp_paper_tables.md): Llama-2-7B on one node of
8 x A800, Megatron-LM, ZeRO-1 over dp x cp, TP with sequence parallelism, no recompute, bf16. Its
Ulysses and ring are yunchang's, inside Megatron-LM (cost.ring_impl: fp32 dK/dV), as the corpus
rows state (validation/corpus/usp_table5.yaml), with Megatron-LM's defaults at the paper's commit
(2196398): no --overlap-grad-reduce and no --overlap-param-gather, so the distributed optimizer's
reduce-scatter and all-gather are exposed, and its cross entropy's out-of-place subtraction.

Micro-batch 1: at 30K a global batch of 16 cannot be one micro-batch per replica (16 x 30720
tokens of activations on one node is ~10x the HBM), so the 30K runs accumulate gradients over
global_batch / dp micro-batches; at 64K the batch is 1 and there is nothing to accumulate.
Measured TFLOPS/GPU use the full-square convention (the paper's first column), as we do.
"""

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.loss_memory import MEGATRON_OUT_OF_PLACE_LOSS
from sp_planner.cost.ring_impl import YUNCHANG_RING
from sp_planner.cost.runtime import MEGATRON_RUNTIME
from sp_planner.plan import ParallelPlan
from sp_planner.search import evaluate
from sp_planner.specs import Workload

MODEL = load_model("Llama-2-7B")
HW = load_hardware("A800")
USP_RUNTIME = MEGATRON_RUNTIME.model_copy(update={
    "ring": YUNCHANG_RING,
    "overlap": MEGATRON_RUNTIME.overlap.model_copy(
        update={"grad_all_reduce": False, "grad_reduce": False, "param_gather": False}),
    "loss_memory": MEGATRON_OUT_OF_PLACE_LOSS,  # that commit's cross entropy (cost.loss_memory)
})
SEQ = {"64K": 65536, "30K": 30720}
BATCH = {"64K": 1, "30K": 16}
# (group, tp, ulysses, ring, measured TFLOPS/GPU)
ROWS = [
    ("64K", 4, 2, 1, 260.2), ("64K", 4, 1, 2, 255.0), ("64K", 8, 1, 1, 238.9),
    ("30K", 2, 4, 1, 239.2), ("30K", 2, 1, 4, 226.6), ("30K", 4, 1, 1, 230.1),
    ("30K", 1, 8, 1, 250.6), ("30K", 1, 1, 8, 218.0), ("30K", 8, 1, 1, 198.0),
]


def predict(group, tp, ulysses, ring):
    plan = ParallelPlan(dp=8 // (tp * ulysses * ring), tp=tp, ulysses=ulysses, ring=ring, zero=1,
                        recompute="none", micro_batch=1)
    workload = Workload(seq_len=SEQ[group], global_batch=BATCH[group])
    return evaluate(MODEL, HW, workload, plan, num_nodes=1, gpus_per_node=8, runtime=USP_RUNTIME)


# The model's errors on these rows run from -4.4% to +3.4% (docs/cost-model.md, Accuracy; the tp 8
# rows, whose TP collectives are the largest share, are under-predicted since cost.collective_sizes);
# the band is that range rounded outwards to whole percent.
LOW, HIGH = -0.05, 0.04


@pytest.mark.parametrize("group, tp, ulysses, ring, measured", ROWS)
def test_model_tflops_within_the_documented_error_band(group, tp, ulysses, ring, measured):
    est = predict(group, tp, ulysses, ring)
    assert est.fits, est.reason
    assert LOW <= est.model_tflops_per_gpu / measured - 1 <= HIGH


# Pairs (faster measured, slower measured) that the model orders the other way; each is a known
# gap in docs/cost-model.md, and a strict xfail flags the day the model gets it right.
KNOWN_SWAPS = {
    ("30K", (4, 1, 1), (2, 1, 4)),  # measured 1.5% apart
}


def _pairs(known: bool):
    for group in SEQ:
        rows = sorted((r for r in ROWS if r[0] == group), key=lambda r: -r[4])
        for i, faster in enumerate(rows):
            for slower in rows[i + 1:]:
                if ((group, faster[1:4], slower[1:4]) in KNOWN_SWAPS) == known:
                    yield group, faster[1:4], slower[1:4]


@pytest.mark.parametrize("group, faster, slower", list(_pairs(known=False)))
def test_measured_order_of_each_pair_is_predicted(group, faster, slower):
    assert predict(group, *faster).model_tflops_per_gpu > predict(group, *slower).model_tflops_per_gpu


@pytest.mark.parametrize("group, faster, slower", [
    pytest.param(*pair, marks=pytest.mark.xfail(strict=True, reason="known ranking gap"))
    for pair in _pairs(known=True)])
def test_known_swaps_are_still_swapped(group, faster, slower):
    assert predict(group, *faster).model_tflops_per_gpu > predict(group, *slower).model_tflops_per_gpu


@pytest.mark.parametrize("group", ["64K", "30K"])
def test_measured_best_is_predicted_best_or_within_3_percent(group):
    rows = [r for r in ROWS if r[0] == group]
    predicted = {r[1:4]: predict(*r[:4]).model_tflops_per_gpu for r in rows}
    measured_best = max(rows, key=lambda r: r[4])[1:4]
    assert predicted[measured_best] >= 0.97 * max(predicted.values())


@pytest.mark.parametrize("ulysses, ring", [(8, 1), (4, 2), (2, 4), (1, 8)])
def test_sequence_parallel_only_does_not_fit_at_64k(ulysses, ring):
    est = predict("64K", 1, ulysses, ring)
    assert not est.fits
    assert est.reason.startswith("oom")
