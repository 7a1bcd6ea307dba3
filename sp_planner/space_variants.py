"""The search's per-plan choices beyond the degrees, ZeRO, recompute and micro-batch: how the ring
axis moves K/V (cp_comm) and FSDP's HSDP replicas and reshard after forward.

Each base row (degrees, zero, recompute, micro_batch) expands into consecutive rows, one per valid
variant, so expanding slices of rows and concatenating equals expanding them all at once
(space.iter_candidates relies on it). Unpinned:
- cp_comm allgather is tried where ring > 1 and ulysses == 1: no framework runs all-gather CP under
  a Ulysses level (Transformer Engine's cp_comm_type is p2p, all_gather, a2a or a2a+p2p);
- ZeRO-3 rows are tried with HSDP as usually run, shards inside a node and replicas across
  (torchtitan docs/fsdp.md, PyTorch HYBRID_SHARD): dp_shard = gpus_per_node / (tp x cp), at
  least 1, when that leaves dp_replicate > 1 (with a known node size only);
- ZeRO-3 rows without HSDP are tried without reshard after forward (the Llama 3 paper's FSDP).
A pinned value keeps only the rows it applies to (dp_replicate > 1 needs zero >= 1 and divides dp;
reshard false needs zero 3).
"""

from __future__ import annotations

import numpy as np

# Variant templates in row order: (allgather, HSDP, reshard).
TEMPLATES: tuple[tuple[int, int, int], ...] = tuple(
    (a, h, s) for a in (0, 1) for h in (0, 1) for s in (1, 0))


def variant_mask(dp, tp, ulysses, ring, zero, *, cp_comm, dp_replicate, reshard_after_forward,
                 gpus_per_node: int | None):
    """(valid (rows, templates) bool, replicate value (rows, templates) int64) for base rows."""
    dp, zero = np.asarray(dp), np.asarray(zero)
    n = len(dp)
    valid = np.zeros((n, len(TEMPLATES)), dtype=bool)
    replicas = np.ones((n, len(TEMPLATES)), dtype=np.int64)
    pure_ring = (np.asarray(ring) > 1) & (np.asarray(ulysses) == 1)
    shard = np.maximum((gpus_per_node or 1) // (np.asarray(tp) * np.asarray(ulysses) * np.asarray(ring)), 1)
    node_hsdp = (zero == 3) & (dp % shard == 0) & (dp > shard) & (gpus_per_node is not None)
    for j, (a, h, s) in enumerate(TEMPLATES):
        if cp_comm is not None:  # a pinned all-gather needs a ring to gather along
            ok = np.full(n, a == (cp_comm == "allgather")) & ((np.asarray(ring) > 1) | (a == 0))
        else:
            ok = np.full(n, True) if a == 0 else pure_ring
        if dp_replicate is not None:
            ok = ok & (h == 0) & (dp % dp_replicate == 0) & ((zero >= 1) | (dp_replicate == 1))
            replicas[:, j] = dp_replicate
        elif h == 1:
            ok = ok & node_hsdp
            replicas[:, j] = dp // shard
        if reshard_after_forward is not None:
            ok = ok & (s == int(reshard_after_forward)) & ((zero == 3) | bool(reshard_after_forward))
        elif s == 0:
            ok = ok & (zero == 3) & (replicas[:, j] == 1)
        valid[:, j] = ok
    return valid, replicas


def variant_rows(mask: np.ndarray, replicas: np.ndarray) -> tuple[np.ndarray, ...]:
    """Each valid (row, template) of variant_mask's `mask`, row-major (each row's variants stay
    together, in template order): (its base row, allgather, dp_replicate, reshard), int64 columns,
    so that the caller gathers each base column once for every variant."""
    rows, cols = np.nonzero(mask)
    extra = np.array(TEMPLATES, dtype=np.int64)
    return rows, extra[cols, 0], replicas[rows, cols].astype(np.int64, copy=False), extra[cols, 2]
