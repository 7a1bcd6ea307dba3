"""Sliding-window layers: Gemma-2's 1:1 local:global pattern and Mistral's all-local layers, by hand."""

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.kernels import flash_time_s
from sp_planner.cost.window import windowed_attention_flops_per_token
from sp_planner.plan import ParallelPlan, violations
from sp_planner.search import evaluate
from sp_planner.specs import Workload

GEMMA2 = load_model("Gemma-2-27B")
H100 = load_hardware("h100-sxm")
WORKLOAD = Workload(seq_len=131072, global_batch=2)
PLAN = ParallelPlan(tp=8, ulysses=2, zero=1, recompute="full")


def test_gemma2_local_layers_attend_to_their_window_only():
    full = GEMMA2.model_copy(update={"window": None})
    ours = evaluate(GEMMA2, H100, WORKLOAD, PLAN, num_nodes=2, gpus_per_node=8)
    dense = evaluate(full, H100, WORKLOAD, PLAN, num_nodes=2, gpus_per_node=8)
    # Per layer, half the layers run a 128K x 4096 band instead of the causal square (flash calls on
    # 32 heads / (tp 8 x ulysses 2) = 2 heads, the whole sequence after the all-to-all).
    band = sum(flash_time_s(H100, batch=1, heads=2, head_dim=128, q_tokens=131072, kv_tokens=4096,
                            causal_diagonal=False, backward=bwd) for bwd in (False, True))
    m_layers = 2 * GEMMA2.num_layers  # 2 micro-batches, 1 stage
    square = dense.time.attention_s / m_layers
    assert ours.time.attention_s / m_layers == pytest.approx(0.5 * square + 0.5 * float(band), rel=1e-9)
    assert ours.time.attention_s < 0.6 * dense.time.attention_s
    # Ulysses traffic does not depend on the window.
    assert ours.time.ulysses_comm_s == pytest.approx(dense.time.ulysses_comm_s, rel=1e-12)


def test_executed_flops_count_the_window():
    q = GEMMA2.q_size
    causal_square = 4.0 * q * 131072 / 2
    assert windowed_attention_flops_per_token(GEMMA2, 131072, causal_square) == pytest.approx(
        0.5 * causal_square + 0.5 * 4.0 * q * 4096)
    # A sequence inside the window is full attention on every layer.
    assert windowed_attention_flops_per_token(GEMMA2, 4096, 123.0) == 123.0


def test_ring_over_windows_is_refused_in_one_rule():
    broken = violations(ParallelPlan(tp=8, ring=2), GEMMA2, WORKLOAD)
    assert [v.rule for v in broken] == ["window_ring"]
    assert "window 4096 < seq_len 131072" in broken[0].message
    assert not violations(ParallelPlan(tp=8, ring=2), GEMMA2, Workload(seq_len=4096, global_batch=2))


def test_llama4_chunked_layers_are_independent_causal_chunks():
    """Llama 4 Scout at 128K: 36 of 48 layers attend within their own 8192-token chunk (16 causal
    squares of 8192 per sequence), the other 12 to the whole causal sequence."""
    scout = load_model("Llama-4-Scout-17B-16E")
    plan = ParallelPlan(tp=4, ulysses=2, ep=8, zero=1, recompute="full")
    full = scout.model_copy(update={"window": None})
    ours = evaluate(scout, H100, WORKLOAD, plan, num_nodes=1, gpus_per_node=8)
    dense = evaluate(full, H100, WORKLOAD, plan, num_nodes=1, gpus_per_node=8)
    # 40 heads / (tp 4 x ulysses 2) = 5 heads per flash call; (1, 131072) -> (16, 8192) sequences.
    chunks = sum(flash_time_s(H100, batch=16, heads=5, head_dim=128, q_tokens=8192, kv_tokens=8192,
                              causal_diagonal=True, backward=bwd) for bwd in (False, True))
    m_layers = 2 * 48  # 2 micro-batches, 1 stage
    square = dense.time.attention_s / m_layers
    assert ours.time.attention_s / m_layers == pytest.approx(0.25 * square + 0.75 * float(chunks), rel=1e-9)
    # Executed FLOPs: a query inside a causal chunk sees 8192/2 keys on average.
    q = scout.q_size
    causal = 4.0 * q * 131072 / 2
    assert windowed_attention_flops_per_token(scout, 131072, causal) == pytest.approx(
        0.25 * causal + 0.75 * 4.0 * q * 4096)
    broken = violations(ParallelPlan(tp=4, ring=2, ep=8), scout, WORKLOAD)
    assert [v.rule for v in broken] == ["window_ring"]
    # Named as the chunks they are, not as sliding windows.
    assert "ring 2 over chunked local-attention layers (chunk 8192 < seq_len 131072)" in broken[0].message
    assert "sliding" not in broken[0].message


def test_gemma3_counts_its_52_local_layers_of_62():
    gemma3 = load_model("Gemma-3-27B")
    q = gemma3.q_size
    causal = 4.0 * q * 131072 / 2
    share = 52 / 62
    assert windowed_attention_flops_per_token(gemma3, 131072, causal) == pytest.approx(
        (1 - share) * causal + share * 4.0 * q * 1024)


def test_unfused_attention_masks_the_window_in_its_whole_square():
    # Transformer Engine's UnfusedDotProductAttention builds the window into its s x s mask
    # (get_full_mask, backends.py at d0067d0): a local layer costs a global one's (Gemma-2-9B on
    # L40S, where TE runs it for Megatron).
    from sp_planner.cost.attention_kernels import UNFUSED, with_attention_kernel

    gemma, l40s = load_model("gemma-2-9b"), with_attention_kernel(load_hardware("l40s"), UNFUSED)
    plan, workload = ParallelPlan(tp=8, zero=1, recompute="full"), Workload(seq_len=32768, global_batch=1)
    ours = evaluate(gemma, l40s, workload, plan, num_nodes=1, gpus_per_node=8)
    dense = evaluate(gemma.model_copy(update={"window": None}), l40s, workload, plan, num_nodes=1, gpus_per_node=8)
    assert ours.time.attention_s == pytest.approx(dense.time.attention_s, rel=1e-12)
    flash = evaluate(gemma, load_hardware("l40s"), workload, plan, num_nodes=1, gpus_per_node=8)
    assert flash.time.attention_s < 0.7 * ours.time.attention_s
