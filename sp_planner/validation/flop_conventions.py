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
