"""FLOP counts that published figures divide by, where the cost model's own counts differ.

A FLOP-based figure is a count over a measured time; the corpus converts a predicted step time
into it with the source's count, not the cost model's (corpus.Convention).
"""

from __future__ import annotations


def megatron_2021_flops_per_step(*, hidden: int, layers: int, vocab: int, seq_len: int, global_batch: int) -> float:
    """Narayanan et al. 2021 (SC21, arXiv 2104.04473) eq. 3, the count behind Table 1's teraFLOP/s:
        F = 96 B s l h^2 (1 + s/(6h) + V/(16 l h)).
    Per layer 4 passes (forward, backward = 2 forwards, and the forward that full activation
    recomputation repeats) of the GEMMs 24 B s h^2 and of attention over the full s x s square
    4 B s^2 h, plus the logits 6 B s h V (forward and backward, not recomputed). Written for GPT
    layers (MLP 4h, one head width per hidden unit); the paper applies it to every Table 1 model.
    """
    b, s, h, v = global_batch, seq_len, hidden, vocab
    return 96.0 * b * s * layers * h**2 * (1.0 + s / (6.0 * h) + v / (16.0 * layers * h))


def usp_v5_flops_per_step(*, hidden: int, q_size: int, ffn: int, mlp_matrices: int, layers: int, vocab: int,
                          seq_len: int, global_batch: int) -> float:
    """The count behind the USP paper's arXiv v5 Table 5 TFLOPS (Fang & Zhao, arXiv 2405.07719v5),
    per token 6 (l (2 h q + m h ffn) + V h) + 6 l s q: Megatron-LM's num_floating_point_operations
    (12 l h^2 ((1 + g/a + s/h) q/h + m/2 ffn/h + V/(2 l h)) per token, g/a the query groups per
    head) with the attention square halved (causal) and the K and V projections left out (g/a
    taken as 0). Not a fit: the paper's first version prints the same runs in Megatron's full count
    (6 N + 12 l s q), and v5/first = this count over that one for all nine Table 5 rows (Llama-2-7B
    at 30K and 64K: 0.6521 and 0.5937) within 0.01%; with K and V counted (the causal model count)
    the ratio would be 0.726 and 0.672.
    """
    h, q, s = hidden, q_size, seq_len
    per_token = 6.0 * (layers * (2 * h * q + mlp_matrices * h * ffn) + vocab * h) + 6.0 * layers * s * q
    return per_token * s * global_batch
