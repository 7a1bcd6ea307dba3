"""Attention layer time and memory against hand derivations on the toy hardware (conftest):
peak 100 TFLOPS, flat flash efficiency 0.5 forward / 0.4 backward, HBM 1 TB/s, no latency.
The toy profile names no kernel, so its causal blocks run at FA2's causal/non-causal ratio."""

import pytest

from sp_planner.cost.attention import (
    attention_layer_memory_bytes,
    attention_layer_time_s,
)
from sp_planner.cost.ring_impl import YUNCHANG_RING

# yunchang's merges (38 bytes a later step's output element, 12 for the ends), run by the executor.
MERGE_FWD_BYTES_PER_ELEM = YUNCHANG_RING.merge_bytes_per_elem
MERGE_ENDS_BYTES_PER_ELEM = YUNCHANG_RING.merge_ends_bytes_per_elem

PEAK = 100e12
SHAPE = dict(batch=1, num_heads=4, num_kv_heads=2, head_dim=16, tp=1, gpus_per_node=8, elem_bytes=2)


def fwd(hardware, **kw):
    return attention_layer_time_s(hardware, **SHAPE, backward=False, **kw)


# FA2 forward, head_dim 128, causal / non-causal TFLOPS in the FlashAttention-3 paper's Fig. 5
# (arXiv 2407.08608): 319 / 368 at 4K, 333 / 370 at 8K.
FA2_CAUSAL_RATIO_FWD = {4096: round(319 / 368, 3), 8192: round(333 / 370, 3)}


def causal_block_s(tokens, heads):
    flops = 4 * heads * 16 * tokens * tokens
    return flops * 0.5 / (PEAK * 0.5 * FA2_CAUSAL_RATIO_FWD[tokens])


def test_single_gpu_causal_is_half_plus_diagonal_tiles(hardware):
    t = fwd(hardware, seq_len=4096, ulysses=1, ring=1, causal=True, ring_layout="zigzag")
    assert t == pytest.approx(causal_block_s(4096, 4))
    full = fwd(hardware, seq_len=4096, ulysses=1, ring=1, causal=False, ring_layout="zigzag")
    assert full == pytest.approx(4 * 4 * 16 * 4096**2 / (PEAK * 0.5))


def test_ring_of_two_zigzag_and_contiguous(hardware):
    # 16k tokens -> 8k per ring rank; K and V blocks of 8k x 2 heads x 16 x 2 B = 1 MB move in
    # 10 us over 100 GB/s, far below a block's compute: hidden, but step 0 runs on 16 of 132 SMs
    # fewer while it moves (cost.overlap).
    block = 8192
    hbm_s_per_byte = 1 / (1e12 * hardware.efficiency.memory_bound)
    merge_s = (MERGE_FWD_BYTES_PER_ELEM + MERGE_ENDS_BYTES_PER_ELEM) * block * 4 * 16 * hbm_s_per_byte
    full_block_s = 4 * 4 * 16 * block * block / (PEAK * 0.5)
    slowdown_s = 16 / 132 * 2 * block * 2 * 16 * 2 / 100e9
    zigzag = fwd(hardware, seq_len=2 * block, ulysses=1, ring=2, causal=True, ring_layout="zigzag")
    basic = fwd(hardware, seq_len=2 * block, ulysses=1, ring=2, causal=True, ring_layout="contiguous")
    assert zigzag == pytest.approx(causal_block_s(block, 4) + slowdown_s + full_block_s / 2 + merge_s)
    # the last rank of a contiguous ring computes a full block in the second step
    assert basic == pytest.approx(causal_block_s(block, 4) + slowdown_s + full_block_s + merge_s)


def test_zigzag_advantage_grows_with_ring(hardware):
    def ratio(ring):
        kw = dict(seq_len=ring * 8192, ulysses=1, ring=ring, causal=True)
        return fwd(hardware, ring_layout="contiguous", **kw) / fwd(hardware, ring_layout="zigzag", **kw)

    assert 1.0 < ratio(2) < ratio(4) < ratio(8) < 2.0


def test_ulysses_adds_all_to_all(hardware):
    # seq 4096 over ulysses 2: 2048 tokens per rank; Q, O 4 heads, K, V 2 heads; half is sent.
    # Each of the four tensors also takes two layout copies, a read and a write of its 2048 x heads
    # x 16 bf16 elements each, through HBM (1e12 B/s at the profile's memory-bound share).
    t = fwd(hardware, seq_len=4096, ulysses=2, ring=1, causal=True, ring_layout="zigzag")
    a2a_bytes = 2048 * (4 + 2 + 2 + 4) * 16 * 2 / 2
    copy_bytes = 2 * 2 * 2048 * (4 + 2 + 2 + 4) * 16 * 2
    copy_s = copy_bytes / (1e12 * hardware.efficiency.memory_bound)
    assert t == pytest.approx(causal_block_s(4096, 2) + a2a_bytes / 100e9 + copy_s)


def test_exposed_ring_transfer_when_compute_is_short(hardware):
    # 1024 tokens per block, non-causal: the first step computes a full block (5.4 us) while K/V
    # (64 KiB) move: hidden over NVLink (0.7 us), exposed over the 10 GB/s NIC (6.6 us) when one
    # GPU per node puts the ring across nodes. The last step has no transfer.
    kw = dict(seq_len=2048, ulysses=1, ring=2, causal=False, ring_layout="contiguous")
    inside = attention_layer_time_s(hardware, **{**SHAPE, "gpus_per_node": 2}, backward=False, **kw)
    across = attention_layer_time_s(hardware, **{**SHAPE, "gpus_per_node": 1}, backward=False, **kw)
    kv_bytes = 2 * 1024 * 2 * 16 * 2
    block_s = 4 * 4 * 16 * 1024 * 1024 / (PEAK * 0.5)
    # Inside the node the transfer hides but slows the block by 16/132 of it (cost.overlap);
    # across, the whole block is slowed and the rest of the transfer is exposed.
    inside_s = block_s + 16 / 132 * kv_bytes / 100e9
    across_s = kv_bytes / 10e9
    assert across - inside == pytest.approx(across_s - inside_s, rel=1e-6)


def test_backward_costs_more_than_forward(hardware):
    kw = dict(seq_len=16384, ulysses=2, ring=2, causal=True, ring_layout="zigzag")
    assert attention_layer_time_s(hardware, **SHAPE, **kw) > 3 * fwd(hardware, **kw)


def test_memory_by_hand():
    # 64 tokens over ulysses 2 x ring 2 -> 16 per rank; Q, O 4 heads x 16 = 1024 elements,
    # K, V 2 heads = 512 each. Forward Q, K, V, O on both sides 2*(1024+512+512+1024)*2 B = 12288;
    # lse 4*16*4 = 256; dO both sides 4096; dQ, dK, dV fp32 8192 + sequence side bf16 4096;
    # ring receive buffers 2*512*(2 + 4) = 6144.
    got = attention_layer_memory_bytes(batch=1, seq_len=64, num_heads=4, num_kv_heads=2, head_dim=16,
                                       ulysses=2, ring=2, elem_bytes=2)
    assert got == 12288 + 256 + 4096 + 8192 + 4096 + 6144


def test_rejects_unknown_layout(hardware):
    with pytest.raises(ValueError, match="ring_layout"):
        fwd(hardware, seq_len=4096, ulysses=1, ring=2, causal=True, ring_layout="stripe")


def test_allgather_ring_of_two_by_hand(hardware):
    # 16k tokens, ring 2, zigzag: chunks of 4k; rank 0 holds chunks 0 and 3 and runs two causal
    # 4k diagonals plus chunk 3 against the 12k earlier keys, unmasked. The gather is exposed:
    # K and V, each 1 block of 8k x 2 heads x 16 x 2 B = 512 KiB sent, at 100 GB/s, no latency.
    chunk, kv_block_bytes = 4096, 8192 * 2 * 16 * 2
    rect_s = 4 * 4 * 16 * chunk * 3 * chunk / (PEAK * 0.5)
    q_elems, full_kv = 2 * chunk * 4 * 16, 16384 * 2 * 16
    hbm_s_per_byte = 1 / (1e12 * hardware.efficiency.memory_bound)
    reorder_s = 2 * 2 * 2 * full_kv * hbm_s_per_byte  # index_select of K and V, bf16
    merge_s = (MERGE_FWD_BYTES_PER_ELEM + MERGE_ENDS_BYTES_PER_ELEM) * q_elems * hbm_s_per_byte
    gather_s = 2 * kv_block_bytes / 100e9
    t = fwd(hardware, seq_len=16384, ulysses=1, ring=2, causal=True, ring_layout="zigzag", cp_comm="allgather")
    assert t == pytest.approx(2 * causal_block_s(chunk, 4) + rect_s + reorder_s + merge_s + gather_s)


def test_allgather_memory_replaces_the_ring_buffers_with_the_gathered_sequence():
    shape = dict(batch=1, seq_len=64, num_heads=4, num_kv_heads=2, head_dim=16, ulysses=1, ring=4, elem_bytes=2)
    ring = attention_layer_memory_bytes(**shape)
    gather = attention_layer_memory_bytes(**shape, cp_comm="allgather")
    block = 16 * 2 * 16  # one local K block
    assert ring - gather == 2 * block * (2 + 4) - 2 * 4 * block * (2 + 2 + 4)
