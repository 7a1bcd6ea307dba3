"""The executor's kernels, merge and collectives replayed on meta_tensors stand-ins (torch-free):
the building blocks of executor.step_memory's replay of a step. Each method is the executor
function it names, statement for statement; comments name where a storage is made."""

from __future__ import annotations

from typing import Literal

from sp_planner.executor.meta_tensors import Ledger, Meta, new

Device = Literal["cpu", "cuda"]
FP32, INT64, BOOL = 4, 8, 1
# CUDA caching allocator: every block a multiple of 512 bytes (kMinBlockSize, round_size in
# c10/cuda/CUDACachingAllocator.cpp); max_memory_allocated counts the rounded blocks.
CUDA_BLOCK_BYTES = 512
# FlashAttention-2's mha_bwd (Dao-AILab flash-attention csrc/flash_attn/flash_api.cpp, vendored as
# aten/src/ATen/native/transformers/cuda/flash_attn/flash_api.cpp) allocates, besides dq/dk/dv,
# softmax_d (b, h, seqlen_q rounded to 128) and dq_accum (b, seqlen_q rounded to 128, h, head
# size rounded to 32), both fp32, alive during the call. With the two copies PyTorch makes before
# it, the replay equals every peak of docs/gpu-check/2026-12-04-h200 (sp_run_*.json) to the byte.
FA2_SEQ_ROUND, FA2_HEAD_ROUND = 128, 32


def _up(x: int, m: int) -> int:
    return -(-x // m) * m


class StepOps:
    """One replay's ledger and device, and the executor's kernels, merge and collectives."""

    def __init__(self, device: Device):
        self.device = device
        self.ledger = Ledger(round_to=CUDA_BLOCK_BYTES if device == "cuda" else 1)

    def new(self, shape, elem_bytes: int) -> Meta:
        return new(self.ledger, tuple(shape), elem_bytes)

    def host(self, shape, elem_bytes: int) -> Meta:
        """A tensor made on the host: counted on CPU only (a CUDA run's allocator never sees it)."""
        return new(self.ledger, tuple(shape), elem_bytes, counted=self.device == "cpu")

    # --- executor.kernels -------------------------------------------------------------------
    def bhsd(self, x: Meta, heads: int) -> Meta:
        """kernels._bhsd: (b, s, h_kv, d) -> (b, heads, s, d) contiguous."""
        x = x.transpose(1, 2)
        if x.shape[1] != heads:  # repeat_interleave: expand(...).clone(Contiguous) (aten Repeat.cpp)
            b, kv, s, d = x.shape
            return self.new((b, heads, s, d), x.elem_bytes)
        return x.contiguous()

    def bshd_grad(self, g: Meta, kv_heads: int) -> Meta:
        """kernels._bshd_grad: the sum over each KV head's repeats, a new (b, h_kv, s, d)."""
        b, h, s, d = g.shape
        if h != kv_heads:
            g = self.new((b, kv_heads, s, d), g.elem_bytes)
        return g.transpose(1, 2)

    def flash_forward(self, q: Meta, k: Meta, v: Meta) -> tuple[Meta, Meta]:
        """CpuFlashKernel / _CudaKernel.forward: out (b, h, s, d) memory, lse fp32 ((b, s, h)
        memory on CPU, sdp_utils_cpp's logsumexp; (b, h, s) on CUDA)."""
        b, s, heads, d = q.shape
        args = (self.bhsd(q, heads), self.bhsd(k, heads), self.bhsd(v, heads))  # noqa: F841 - alive in the op
        out = self.new((b, heads, s, v.shape[-1]), q.elem_bytes)
        lse = self.new((b, s, heads), FP32).transpose(1, 2) if self.device == "cpu" else self.new((b, heads, s), FP32)
        del args
        return out.transpose(1, 2), lse

    def flash_backward(self, dout, q, k, v, out, lse) -> tuple[Meta, Meta, Meta]:
        heads, kv_heads = q.shape[2], k.shape[2]
        args = [self.bhsd(dout, heads), self.bhsd(q, heads), self.bhsd(k, heads), self.bhsd(v, heads),
                self.bhsd(out, heads), lse.contiguous()]
        b, sq, sk, d = q.shape[0], q.shape[1], k.shape[1], q.shape[-1]
        dq, dk, dv = (self.new((b, heads, n, d), q.elem_bytes) for n in (sq, sk, sk))
        if self.device == "cuda":  # inside the op, freed as it returns: PyTorch's
            # _flash_attention_backward (attention_backward.cu) passes grad_out.contiguous() and
            # out.contiguous() of its (b, s, h, d) views, then FlashAttention-2's workspace
            args += [args[0].transpose(1, 2).contiguous(), args[4].transpose(1, 2).contiguous(),
                     self.new((b, heads, _up(sq, FA2_SEQ_ROUND)), FP32),
                     self.new((b, _up(sq, FA2_SEQ_ROUND), heads, _up(d, FA2_HEAD_ROUND)), FP32)]
        del args
        return dq.transpose(1, 2), self.bshd_grad(dk, kv_heads), self.bshd_grad(dv, kv_heads)

    def pad(self, x: Meta, width: int) -> Meta:
        """head_dims._pad_to: F.pad -> a new (b, s, h, width) (constant_pad_nd)."""
        return x if x.shape[-1] == width else self.new(x.shape[:-1] + (width,), x.elem_bytes)

    def forward_call(self, q, k, v, dims: tuple[int, int]) -> tuple[Meta, Meta]:
        qk_dim, v_dim = dims
        if qk_dim == v_dim:
            return self.flash_forward(q, k, v)
        w = max(dims)  # PaddedHeadDims.forward
        out, lse = self.flash_forward(self.pad(q, w), self.pad(k, w), self.pad(v, w))
        return out.narrow(3, 0, v_dim).contiguous(), lse

    def backward_call(self, dout, q, k, v, out, lse, dims: tuple[int, int]) -> tuple[Meta, Meta, Meta]:
        qk_dim, v_dim = dims
        if qk_dim == v_dim:
            return self.flash_backward(dout, q, k, v, out, lse)
        w = max(dims)  # PaddedHeadDims.backward
        dq, dk, dv = self.flash_backward(self.pad(dout, w), self.pad(q, w), self.pad(k, w), self.pad(v, w),
                                         self.pad(out, w), lse)
        return (dq.narrow(3, 0, qk_dim).contiguous(), dk.narrow(3, 0, qk_dim).contiguous(),
                dv.narrow(3, 0, v_dim).contiguous())

    # --- executor.merge ---------------------------------------------------------------------
    def merge_partial(self, out: Meta, lse: Meta, out_b: Meta, lse_b: Meta) -> tuple[Meta, Meta]:
        """merge.merge_partial: each temporary made and dropped where its expression is."""
        lse, lse_b = lse.to(FP32), lse_b.to(FP32)
        difference = self.new(lse.shape, FP32)  # lse_b - lse
        weight_b = self.new(lse.shape, FP32)  # noqa: F841 - torch.sigmoid(...), alive to the return
        del difference
        out = out.to(FP32)
        out_b32 = out_b.to(FP32)  # out_b.float()
        diff = self.new(out.shape, FP32)  # out - out_b.float()
        del out_b32
        weighted = self.new(out.shape, FP32)  # weight_b * (...)
        del diff
        merged_out = self.new(out.shape, FP32)  # out - ...
        del weighted
        difference = self.new(lse.shape, FP32)  # lse - lse_b
        # F.logsigmoid: aten log_sigmoid_forward returns (output, buffer); the CPU kernel fills
        # a buffer of the input's size, CUDA's is empty (activation/LogSigmoid.cpp, .cu)
        logsig, buffer = self.new(  # noqa: F841 - the output lives through the subtraction
            lse.shape, FP32), self.new(lse.shape if self.device == "cpu" else (0,), FP32)
        del buffer, difference
        merged_lse = self.new(lse.shape, FP32)  # lse - F.logsigmoid(...)
        return merged_out, merged_lse

    # --- executor.comm ----------------------------------------------------------------------
    def seq_to_head(self, x: Meta, p: int) -> Meta:
        """comm.seq_to_head: the permuted copy sent, the all-to-all's output (empty_like), and a
        copy where the received chunks cannot be viewed as (b, s, h/P, d)."""
        b, s_local, h, d = x.shape
        send = x.split(2, p).permute(2, 0, 1, 3, 4).contiguous()
        recv = send.like()  # _all_to_all_dim0
        return recv.permute(1, 0, 2, 3, 4).merge(1)

    def head_to_seq(self, x: Meta, p: int) -> Meta:
        """comm.head_to_seq, the inverse."""
        send = x.split(1, p).permute(1, 0, 2, 3, 4).contiguous()
        recv = send.like()
        return recv.permute(1, 2, 0, 3, 4).merge(2)

    def all_gather_dim0(self, x: Meta, p: int) -> Meta:
        x = x.contiguous()
        return self.new((p * x.shape[0],) + x.shape[1:], x.elem_bytes)

    def reduce_scatter_dim0(self, x: Meta, p: int) -> Meta:
        x = x.contiguous()
        return self.new((x.shape[0] // p,) + x.shape[1:], x.elem_bytes)
