"""Which head dims the CUDA attention kernels take (torch-free, so the CLI refuses a run before
launching it; sp_planner.executor.kernels applies the same rules).

- FlashAttention-2 (aten._scaled_dot_product_flash_attention): head dim at most 256 and a
  multiple of 8 (flash_api.cpp mha_fwd checks both; SDPA's front end pads to 8 first, the raw
  op does not).
- Memory-efficient (aten._scaled_dot_product_efficient_attention, CUTLASS): a multiple of the
  GEMM alignment, 16 bytes on sm80+: 8 elements in fp16/bf16, 4 in fp32 (sdp_utils.cpp
  check_head_dim_size_mem_efficient with minimum_gemm_alignment).
CPU kernels and the math kernel take any head dim.
"""

from __future__ import annotations

FLASH_MAX_HEAD_DIM = 256
FLASH_HEAD_DIM_MULTIPLE = 8
EFFICIENT_ALIGNMENT_BYTES = 16
FLASH, EFFICIENT = "flash", "efficient"


def cuda_kernel_for(elem_bytes: int) -> str:
    """The CUDA kernel `--kernel auto` picks: flash for 16-bit dtypes, memory-efficient for fp32
    (FlashAttention-2 has no fp32 kernel)."""
    return EFFICIENT if elem_bytes == 4 else FLASH


def head_dim_problem(kernel: str, head_dim: int, elem_bytes: int) -> str | None:
    """Why `kernel` ("flash" or "efficient") cannot run `head_dim`, or None."""
    if kernel == FLASH:
        if head_dim > FLASH_MAX_HEAD_DIM or head_dim % FLASH_HEAD_DIM_MULTIPLE:
            return (f"head dim {head_dim}: CUDA flash attention needs a multiple of {FLASH_HEAD_DIM_MULTIPLE} "
                    f"up to {FLASH_MAX_HEAD_DIM}")
        return None
    multiple = EFFICIENT_ALIGNMENT_BYTES // elem_bytes
    if head_dim % multiple:
        return (f"head dim {head_dim}: CUDA memory-efficient attention with {elem_bytes}-byte elements needs "
                f"a multiple of {multiple}")
    return None


def kernel_problems(*, device: str, kernel: str, head_dim: int, elem_bytes: int) -> list[str]:
    """One line per reason the run's attention kernel cannot take its shapes (sp-run refuses
    rather than falling back silently)."""
    if device != "cuda" or kernel == "math":
        return []
    problem = head_dim_problem(cuda_kernel_for(elem_bytes), head_dim, elem_bytes)
    return [f"{problem}; pass --kernel math for the explicit fp32 kernel (O(s^2) memory per block)"] if problem else []
