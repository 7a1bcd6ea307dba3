"""Peak bytes one sp-run step allocates above its inputs, replayed through the executor's code
(torch-free): the figure `executor.case` measures (CPU: storages aten ops create during the
step, executor.memory; CUDA: max_memory_allocated above memory_allocated before it).

Each method below (and in step_ops) is the executor function it names, statement for statement,
on `meta_tensors.Meta` stand-ins, so every storage is made and freed where the real one is, but
for loop turns that repeat an earlier one to the byte (computed_steps, gathered_order: O(1) a
rank, not O(ring)); one rank of each kind of work stands for the others (step_peak_bytes). The
step's inputs (this rank's Q, K, V, dO) exist before it and are not counted. What a kernel
allocates inside itself is counted as the measurement sees it: nothing on CPU (the dispatch mode
sees only an op's outputs, not its scratch or TensorIterator's dtype-cast copies); on CUDA the
copies PyTorch's flash backward makes and FlashAttention-2's workspace (step_ops). It equals the
CPU measurement to the byte over Ulysses, ring (both layouts), all-gather and USP, fp32/bf16/fp16,
GQA with and without KV replication, batch 2, MLA (tests/executor/test_step_memory.py), and the
recorded H200 runs (step_ops.FA2_SEQ_ROUND). Covered: the flash kernels (CPU flash,
CUDA FlashAttention-2; q/k/v zero-padded for MLA), Ulysses, ring p2p and all-gather CP, USP. The
math kernel (softcap, window, --kernel math) and CUDA's memory-efficient kernel (fp32) return None.
single_run_peak_bytes replays the tolerance's single-device run the same way (executor.budget,
sp-run's fit check before launch, uses both).
"""

from __future__ import annotations

from dataclasses import dataclass

from sp_planner.executor.blocks import Block, block_for_step, pieces_for_rank
from sp_planner.executor.config import RunConfig
from sp_planner.executor.kernel_rules import FLASH, cuda_kernel_for
from sp_planner.executor.meta_tensors import Meta, new
from sp_planner.executor.step_ops import BOOL, FP32, INT64, StepOps
from sp_planner.plan import RingLayout


@dataclass(frozen=True)
class _Ring:
    """The ring axis as one rank sees it, and the head dims of Q/K and V."""

    size: int
    rank: int
    causal: bool
    layout: RingLayout
    dims: tuple[int, int]


def computed_steps(ring: _Ring, seq_local: int) -> list[tuple[int, Block]]:
    """The ring steps the replay computes, with their blocks: those with one (block_for_step), less
    the third and later of a run of equal blocks after the first three. A computed step allocates
    by its block alone, over the loop's buffers and the previous computed step's results (the
    first two also differ in whether a first result exists, in fp32 aliasing the accumulator), so
    such a step repeats the one before it to the byte and the loop ends with the same results."""
    kept: list[tuple[int, Block]] = []
    computed: list[Block] = []
    for step in range(ring.size):
        block = block_for_step(step, ring.rank, ring.size, seq_local, causal=ring.causal, layout=ring.layout)
        if block is None:
            continue
        if len(computed) < 3 or not block == computed[-1] == computed[-2]:
            kept.append((step, block))
        computed.append(block)
    return kept


class _Step(StepOps):
    """The ring, all-gather and Ulysses levels of a step, on StepOps."""

    # --- executor.ring ----------------------------------------------------------------------
    def ring_forward(self, q, k, v, ring: _Ring) -> tuple[Meta, Meta]:
        buffers = [(k.like(), v.like()) for _ in range(2)]
        out = lse = out_b = lse_b = None
        current = (k, v)
        for step, block in computed_steps(ring, q.shape[1]):
            incoming = buffers[step % 2]
            kb, vb = (t.rows(1, block.kv_rows) for t in current)
            out_b, lse_b = self.forward_call(q.rows(1, block.q_rows), kb, vb, ring.dims)
            del kb, vb
            if out is None or lse is None:
                out, lse = out_b.to(FP32), lse_b.to(FP32)
            else:
                merged = self.merge_partial(out.rows(1, block.q_rows), lse.rows(2, block.q_rows), out_b, lse_b)
                del merged
            current = incoming
        assert out is not None and lse is not None
        finite = self.new(lse.shape, BOOL), self.new((), BOOL)  # torch.isfinite(lse).all()
        del finite
        return out.to(q.elem_bytes), lse

    def ring_backward(self, dout, q, k, v, out, lse, ring: _Ring) -> tuple[Meta, Meta, Meta]:
        kv_buffers = [(k.like(), v.like()) for _ in range(2)]  # noqa: F841 - alive to the end
        grad_buffers = [(k.like(FP32), v.like(FP32)) for _ in range(2)]
        dq = q.like(FP32)
        current = (k, v)
        for step, block in computed_steps(ring, q.shape[1]):
            incoming = kv_buffers[step % 2]
            rows, kv_rows = block.q_rows, block.kv_rows
            dq_b, dk_b, dv_b = self.backward_call(  # noqa: F841 - alive until the next step's
                dout.rows(1, rows), q.rows(1, rows), current[0].rows(1, kv_rows), current[1].rows(1, kv_rows),
                out.rows(1, rows), lse.rows(2, rows), ring.dims)
            current = incoming
        dk, dv = grad_buffers[ring.size % 2] if ring.size > 1 else grad_buffers[0]
        return self._results(dq, dk, dv, q.elem_bytes)

    def _results(self, dq: Meta, dk: Meta, dv: Meta, elem_bytes: int) -> tuple[Meta, Meta, Meta]:
        """`return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)`, made one after another."""
        a = dq.to(elem_bytes)
        b = dk.to(elem_bytes)
        return a, b, dv.to(elem_bytes)

    # --- executor.allgather -----------------------------------------------------------------
    def gathered_order(self, seq_len: int, ring: _Ring) -> Meta:
        """allgather._gathered_order: each rank's sharding.local_token_index (an arange per owned
        chunk, concatenated) on the host, concatenated, then moved to the device."""
        zigzag = ring.size > 1 and ring.layout == "zigzag"
        chunk = seq_len // (2 * ring.size if zigzag else ring.size)
        # Every rank's turn of the loop makes and frees the same, so its peak is the last turn's:
        # the parts of the others, alive by then, as one storage (byte-exact: host storages are
        # counted on CPU only, whose ledger does not round), then the last turn statement for statement.
        parts = [self.host(((ring.size - 1) * (2 if zigzag else 1) * chunk,), INT64)]
        aranges = [self.host((chunk,), INT64) for _ in range(2 if zigzag else 1)]
        parts.append(self.host((len(aranges) * chunk,), INT64))
        del aranges
        order = self.host((seq_len,), INT64)
        del parts
        return order if self.device == "cpu" else self.new((seq_len,), INT64)

    def gather_kv(self, k: Meta, v: Meta, size: int, order: Meta) -> list[Meta]:
        # torch.argsort: aten sort's values and indices; the indices (`inverse`) live to the return
        values, inverse = self.new(order.shape, INT64), self.new(order.shape, INT64)  # noqa: F841
        del values
        full = []
        for x in (k, v):
            gathered = self.all_gather_dim0(x.transpose(0, 1), size)
            full.append(self.new(gathered.shape, x.elem_bytes).transpose(0, 1))  # index_select(0, inverse)
        return full  # `gathered` of K lived on through V's all-gather, as the loop variable does

    def allgather_forward(self, q, k, v, ring: _Ring) -> tuple[Meta, Meta]:
        seq_len = q.shape[1] * ring.size
        k_full, v_full = self.gather_kv(k, v, ring.size, self.gathered_order(seq_len, ring))
        out = self.new(q.shape[:3] + (v.shape[-1],), FP32)
        lse = self.new((q.shape[0], q.shape[2], q.shape[1]), FP32)
        first_rows: set[tuple] = set()
        out_b = lse_b = None
        for piece in pieces_for_rank(ring.rank, ring.size, seq_len, causal=ring.causal, layout=ring.layout):
            rows = piece.q_rows
            out_b, lse_b = self.forward_call(q.rows(1, rows), k_full.narrow(1, piece.kv_start, piece.kv_end),
                                             v_full.narrow(1, piece.kv_start, piece.kv_end), ring.dims)
            key = (rows.start, rows.stop)
            if key not in first_rows:
                first_rows.add(key)
                pair = out_b.to(FP32), lse_b.to(FP32)  # copied into out[:, rows], lse[:, :, rows]
            else:
                pair = self.merge_partial(out.rows(1, rows), lse.rows(2, rows), out_b, lse_b)
            del pair
        finite = self.new(lse.shape, BOOL), self.new((), BOOL)
        del finite
        return out.to(q.elem_bytes), lse

    def allgather_backward(self, dout, q, k, v, out, lse, ring: _Ring) -> tuple[Meta, Meta, Meta]:
        seq_len = q.shape[1] * ring.size
        order = self.gathered_order(seq_len, ring)
        k_full, v_full = self.gather_kv(k, v, ring.size, order)
        dq = q.like(FP32)
        dk_full, dv_full = k_full.like(FP32), v_full.like(FP32)
        grads = None  # dq_b, dk_b, dv_b: each piece's alive until the next's, the last one's to the end
        for piece in pieces_for_rank(ring.rank, ring.size, seq_len, causal=ring.causal, layout=ring.layout):
            rows = piece.q_rows
            grads = self.backward_call(  # noqa: F841
                dout.rows(1, rows), q.rows(1, rows), k_full.narrow(1, piece.kv_start, piece.kv_end),
                v_full.narrow(1, piece.kv_start, piece.kv_end), out.rows(1, rows), lse.rows(2, rows), ring.dims)
        reduced = []
        for g in (dk_full, dv_full):  # `ranked` of dK lives on through dV's, as the loop variable does
            ranked = self.new(g.transpose(0, 1).shape, FP32)  # index_select(0, order)
            reduced.append(self.reduce_scatter_dim0(ranked, ring.size).transpose(0, 1))
        return self._results(dq, reduced[0], reduced[1], q.elem_bytes)

    # --- executor.ulysses, usp, case._step --------------------------------------------------
    def replicate_kv_heads(self, x: Meta, ulysses: int) -> Meta:
        b, s, kv, d = x.shape
        return x if kv >= ulysses else self.new((b, s, ulysses, d), x.elem_bytes)  # repeat_interleave

    def step(self, cfg: RunConfig, ring: _Ring) -> int:
        """case._step: usp_attention forward, out.backward(dout); the peak above the inputs."""
        u, e = cfg.ulysses, cfg.elem_bytes
        b, s = cfg.batch, cfg.seq_len // cfg.world_size
        h, kv, d_qk, d_v = cfg.heads_per_tp_rank, cfg.kv_heads_per_tp_rank, cfg.head_dim, cfg.v_dim
        shapes = ((b, s, h, d_qk), (b, s, kv, d_qk), (b, s, kv, d_v), (b, s, h, d_v))
        q, k, v, dout = (new(self.ledger, shape, e, counted=False) for shape in shapes)
        forward = self.allgather_forward if cfg.cp_comm == "allgather" else self.ring_forward
        backward = self.allgather_backward if cfg.cp_comm == "allgather" else self.ring_backward
        qh, kh, vh = q, k, v
        if u > 1:  # SeqToHead: one tensor after another; the replicated K, V die once it returns
            k_rep, v_rep = self.replicate_kv_heads(k, u), self.replicate_kv_heads(v, u)
            qh = self.seq_to_head(q, u)
            kh = self.seq_to_head(k_rep, u)
            vh = self.seq_to_head(v_rep, u)
            del k_rep, v_rep
        out_h, lse = forward(qh, kh, vh, ring)
        saved = [qh, kh, vh, out_h, lse]  # ContextParallelAttention's ctx.save_for_backward
        del qh, kh, vh, lse
        out = self.head_to_seq(out_h, u) if u > 1 else out_h  # noqa: F841 - the step's output, alive to the end
        del out_h
        # backward: HeadToSeq's, then ContextParallelAttention's (its saved tensors and incoming
        # gradient released once it returns, torch/csrc/autograd/engine.cpp call_function)
        grad = self.seq_to_head(dout.contiguous(), u) if u > 1 else dout
        grads = backward(grad.contiguous(), saved[0], saved[1], saved[2], saved[3], saved[4], ring)
        del saved, grad
        if u > 1:  # SeqToHead's backward, then repeat_interleave's (a sum over the repeats), V's first
            seq = [self.head_to_seq(g.contiguous(), u) for g in grads]
            del grads
            if kv < u:
                seq[2] = self.new(v.shape, e)
                seq[1] = self.new(k.shape, e)
            del seq
        return self.ledger.peak_bytes


def step_memory_covered(cfg: RunConfig) -> str | None:
    """None where step_peak_bytes replays the run's kernel, else why not."""
    if cfg.math_kernel:
        return "sp-run's memory replay covers the flash kernels, not the math kernel this run uses"
    if cfg.device == "cuda" and cuda_kernel_for(cfg.elem_bytes) != FLASH:
        return "sp-run's memory replay covers the flash kernels, not CUDA's memory-efficient kernel this run uses"
    return None


def ring_rank_peak_bytes(cfg: RunConfig, ring_rank: int) -> int | None:
    """Peak bytes above its inputs of a rank at `ring_rank` over one forward+backward step (every
    rank of a Ulysses group alike); None where the kernel is not covered."""
    if step_memory_covered(cfg) is not None:
        return None
    return _Step(cfg.device).step(cfg, _ring(cfg, ring_rank))


def _ring(cfg: RunConfig, ring_rank: int) -> _Ring:
    return _Ring(size=cfg.ring, rank=ring_rank, causal=cfg.causal, layout=cfg.ring_layout,
                 dims=(cfg.head_dim, cfg.v_dim))


def _rank_work(cfg: RunConfig, ring_rank: int) -> tuple:
    """What of the replay depends on the ring rank: the shapes of its kernel calls, in order (the
    computed ring steps' blocks, or all-gather CP's pieces). Ranks with the same work peak alike."""
    seq_local = cfg.seq_len // cfg.world_size * cfg.ulysses  # the ring level's query rows (step: after SeqToHead)
    if cfg.cp_comm == "allgather":  # slices are not hashable before Python 3.12: their ends
        return tuple((p.q_rows.start, p.q_rows.stop, p.kv_end - p.kv_start, p.causal) for p in pieces_for_rank(
            ring_rank, cfg.ring, seq_local * cfg.ring, causal=cfg.causal, layout=cfg.ring_layout))
    return tuple((b.q_rows.start, b.q_rows.stop, b.kv_rows.start, b.kv_rows.stop, b.causal)
                 for _, b in computed_steps(_ring(cfg, ring_rank), seq_local))


def step_peak_bytes(cfg: RunConfig) -> int | None:
    """The largest rank's (causal ring ranks compute different blocks), replaying one rank of each
    kind of work (_rank_work: at most 3 in a ring, 5 zigzag; one a rank of all-gather CP); None where not covered."""
    if step_memory_covered(cfg) is not None:
        return None
    replayed: dict[tuple, int] = {}  # work -> the first ring rank doing it
    for r in range(cfg.ring):
        replayed.setdefault(_rank_work(cfg, r), r)
    return max(_Step(cfg.device).step(cfg, _ring(cfg, r)) for r in replayed.values())


def single_run_peak_bytes(cfg: RunConfig) -> int | None:
    """Peak bytes above the global fp32 inputs of reference.single_device_run (the tolerance's
    same-dtype run of the kernel on the whole sequence, every rank alike): the inputs rounded to
    the dtype (t.to(float32) is t itself), one kernel forward and backward; its O, dQ, dK, dV are
    alive at the end. None where the kernel is not covered."""
    if step_memory_covered(cfg) is not None:
        return None
    ops = StepOps(cfg.device)
    b, s, h, kv, d_qk, d_v = (cfg.batch, cfg.seq_len, cfg.heads_per_tp_rank, cfg.kv_heads_per_tp_rank,
                              cfg.head_dim, cfg.v_dim)
    shapes = ((b, s, h, d_qk), (b, s, kv, d_qk), (b, s, kv, d_v), (b, s, h, d_v))
    q, k, v, dout = (new(ops.ledger, shape, FP32, counted=False).to(cfg.elem_bytes) for shape in shapes)
    out, lse = ops.forward_call(q, k, v, (d_qk, d_v))
    grads = ops.backward_call(dout, q, k, v, out, lse, (d_qk, d_v))  # noqa: F841 - returned with out
    return ops.ledger.peak_bytes


# ProcessGroupGloo runs collectives on 2 worker threads (Options.threads default), and a worker
# keeps a finished work, with the tensors it holds, until it takes its lock again
# (ProcessGroupGloo::runLoop, workInProgress_): after the caller has dropped them, for as long
# as the thread waits for a core. Seen on 2 cores: a rank 6,144 bytes (two all-to-all sends)
# above the replay in one run of a case that matched it to the byte in the others.
COLLECTIVE_WORKERS = 2


def collective_held_bytes(cfg: RunConfig) -> int:
    """The most a rank can read above the replay from collectives' buffers their worker threads
    have not let go yet: per worker, the largest work's tensors (Ulysses: an all-to-all's send and
    receive, the largest query-sized; all-gather CP: the gathered K/V and its contiguous input,
    or the reduce-scatter's fp32 dK/dV and its shard). Ring P2P only moves buffers the step
    keeps anyway."""
    e, b, s = cfg.elem_bytes, cfg.batch, cfg.seq_len // cfg.world_size
    width = max(cfg.head_dim, cfg.v_dim)
    held = 0
    if cfg.ulysses > 1:
        held = 2 * b * s * cfg.heads_per_tp_rank * width * e
    if cfg.cp_comm == "allgather" and cfg.ring > 1:
        kv_shard = b * s * max(cfg.kv_heads_per_tp_rank, cfg.ulysses) * width  # K or V after the all-to-all
        held = max(held, (cfg.ring + 1) * kv_shard * max(e, FP32))
    return COLLECTIVE_WORKERS * held
