"""cost.layer_kinds: which layers are local or MoE, where Megatron places them on the pipeline
stages, and that the kinds' layer times blended by the model's shares give cost.layer_times'
average layer."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.gemm_work import LOSS_BYTES_PER_LOGIT
from sp_planner.cost.layer_kinds import (LayerKind, distinct_kinds, kind_model, layer_kinds, stage_global_layers,
                                         stage_kind_counts)
from sp_planner.cost.layer_times import LayerTimes, candidate_layer_times
from sp_planner.cost.overlap import MEGATRON_OVERLAP
from sp_planner.cost.ring_impl import TE_RING
from sp_planner.cost.tp_gathers import TE_TP_GATHERS
from sp_planner.cost.window import layer_is_local
from sp_planner.plan import ParallelPlan
from sp_planner.candidates import Candidates
from sp_planner.specs import Workload

RUNTIME = dict(gpus_per_node=8, overlap=MEGATRON_OVERLAP, ring_impl=TE_RING, loss_bytes_per_logit=LOSS_BYTES_PER_LOGIT,
               sequence_parallel=True, tp_gathers=TE_TP_GATHERS)


@pytest.mark.parametrize("name", ["Gemma-3-27B", "Gemma-2-9B", "Llama-4-Maverick-17B-128E", "Llama-4-Scout-17B-16E"])
def test_local_layers_follow_the_pattern_num_local_layers_counts(name):
    model = load_model(name)
    local = layer_is_local(model, 131072)
    assert sum(local) == model.num_local_layers
    assert not any(layer_is_local(model, model.window.window_tokens))  # the window covers the sequence


def test_gemma_3_global_layers_are_every_sixth_and_maverick_mixes_three_kinds():
    # Gemma 3: sliding_window_pattern 6, layer i global where (i + 1) % 6 == 0 (HF Gemma3 layer_types).
    gemma = load_model("Gemma-3-27B")
    assert [i for i, k in enumerate(layer_kinds(gemma, 131072)) if not k.local] == list(range(5, 62, 6))
    # Maverick: MoE every 2nd layer (odd ones), chunked local attention 3 of every 4 (global: 3, 7, ...).
    maverick = load_model("Llama-4-Maverick-17B-128E")
    kinds = layer_kinds(maverick, 131072)
    assert kinds[:4] == (LayerKind(False, True), LayerKind(True, True), LayerKind(False, True), LayerKind(True, False))
    assert distinct_kinds(maverick, 131072) == (LayerKind(False, True), LayerKind(True, False), LayerKind(True, True))
    assert distinct_kinds(load_model("Llama-3-8B"), 131072) == (LayerKind(False, False),)


def test_kind_models_hold_one_kind_of_layer():
    deepseek = load_model("DeepSeek-V3")
    dense, moe = (kind_model(deepseek, k) for k in distinct_kinds(deepseek, 4096))
    assert dense.moe is None and dense.intermediate_size == deepseek.intermediate_size
    assert moe.num_moe_layers == deepseek.num_layers
    gemma = load_model("Gemma-3-27B")
    global_, local = (kind_model(gemma, k) for k in distinct_kinds(gemma, 131072))
    assert global_.window is None and local.num_local_layers == gemma.num_layers


def test_stage_layers_by_virtual_stage_by_hand():
    # 8 layers, pp 2, vpp 2: virtual stages 0 (stage 0), 1 (stage 1), 2 (stage 0), 3 (stage 1).
    assert stage_global_layers(8, 2, 2, 0, 0) == ((0, 1, 4, 5), (2, 3, 6, 7))
    # Explicit split 2/4/2 over pp 3: consecutive blocks.
    assert stage_global_layers(8, 3, 1, 2, 2) == ((0, 1), (2, 3, 4, 5), (6, 7))
    # Gemma 3's counted split, 62 layers over 8 stages of 8 virtual stages: 64 units of one, the
    # embedding the first (stage 0's chunk 0 empty), the loss the last (stage 7's chunk 7 empty).
    placed = stage_global_layers(62, 8, 8, 7, 7)
    assert placed[0] == (7, 15, 23, 31, 39, 47, 55) and placed[1] == tuple(range(0, 64, 8))
    assert placed[7] == tuple(range(6, 62, 8))
    assert sorted(sum(placed, ())) == list(range(62))
    # Its global layers (5, 11, ..., 59): 3 on stages 4 and 6, none on the odd stages.
    counts = stage_kind_counts(load_model("Gemma-3-27B"), 131072, 8, 8, 7, 7)
    assert counts[:, 0].tolist() == [2, 0, 2, 0, 3, 0, 3, 0]
    assert counts.sum(axis=1).tolist() == [7, 8, 8, 8, 8, 8, 8, 7]


def _flat(lt: LayerTimes) -> dict[str, np.ndarray]:
    out = {}
    for name, value in lt._asdict().items():
        parts = value._asdict().items() if isinstance(value, tuple) else [("", value)]
        out.update({f"{name}.{k}": np.asarray(v, dtype=np.float64) for k, v in parts})
    return out


@pytest.mark.parametrize(("name", "plan", "seq_len"), [
    ("Gemma-3-27B", ParallelPlan(tp=1, ulysses=8, pp=8, vpp=4, first_stage_layers=7, last_stage_layers=7), 131072),
    ("DeepSeek-V3", ParallelPlan(tp=2, pp=8, ep=8, dp=32, first_stage_layers=6, last_stage_layers=7), 32768),
    ("Llama-4-Maverick-17B-128E", ParallelPlan(tp=4, pp=4, ep=8, dp=16), 65536),
])
def test_kinds_blended_by_the_models_shares_give_the_average_layer(name, plan, seq_len):
    model, hardware = load_model(name), load_hardware("h100-sxm")
    workload, c = Workload(seq_len=seq_len, global_batch=64), Candidates.of_plan(plan)
    average = _flat(candidate_layer_times(model, hardware, workload, c, **RUNTIME))
    kinds = layer_kinds(model, seq_len)
    blend = {key: 0.0 for key in average}
    per_layer = []
    for kind in distinct_kinds(model, seq_len):
        share = kinds.count(kind) / len(kinds)
        times = _flat(candidate_layer_times(kind_model(model, kind), hardware, workload, c, **RUNTIME))
        blend = {key: blend[key] + share * times[key] for key in blend}
        per_layer.append(float(times["per_layer_s."][0]))
    assert max(per_layer) > 1.2 * min(per_layer)  # the kinds' layers cost differently
    for key in average:
        assert blend[key] == pytest.approx(average[key], rel=1e-12, abs=1e-18), key
