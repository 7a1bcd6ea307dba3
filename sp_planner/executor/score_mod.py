"""Score modifications a model's attention makes beyond the causal mask: Gemma 2's logit
softcapping and local (sliding-window or chunked) attention.

- softcap c: the scaled scores s become c * tanh(s / c) before the softmax (Gemma 2,
  arXiv 2408.00118 section 2; HF Gemma2 `attn_logit_softcapping`); in the backward
  dS_raw = dS_capped * (1 - tanh^2(s / c)).
- sliding window W: query q sees the W keys q - W < k <= q, itself included (HF masking_utils
  sliding_window_overlay `kv_idx > q_idx - sliding_window`; FlashAttention window_size (W-1, 0)).
- chunked window W: query q sees the keys of its own W-token chunk, causally (HF Llama 4
  chunked mask: k // W == q // W).

The window depends on global token positions, which a ring block knows only through the
sharding (sp_planner.executor.sharding): each kernel call gets a `BlockMod` holding its
(q rows x kv rows) mask, built from the global positions of both. Only the math kernel
(sp_planner.executor.kernels.MathKernel) takes a BlockMod; kernels that do not are never given one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

SLIDING, CHUNKED = "sliding", "chunked"


class BlockMod(NamedTuple):
    """One kernel call's modifications: softcap (None: none) and `masked` (sq, sk) bool, True
    where the window hides a key from a query (None: no window). The call's causal flag is
    applied as before, beside it."""

    softcap: float | None
    masked: torch.Tensor | None


@dataclass(frozen=True)
class ScoreMods:
    """A run's score modifications (RunConfig.softcap, window, window_kind)."""

    softcap: float | None = None
    window: int | None = None
    window_kind: str = SLIDING

    @property
    def active(self) -> bool:
        return self.softcap is not None or self.window is not None

    def window_mask(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor | None:
        """(sq,) and (sk,) global positions -> (sq, sk) bool, True where the window hides the key
        (keys after the query are the causal mask's, not this one's)."""
        if self.window is None:
            return None
        q, k = q_pos[:, None], k_pos[None, :]  # (sq, 1), (1, sk)
        if self.window_kind == CHUNKED:
            return (q // self.window) != (k // self.window)
        return (q - k) >= self.window

    def block(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> BlockMod | None:
        """The BlockMod of a call whose query rows sit at q_pos and keys at k_pos (None when the
        run has no modification: the call is made as before)."""
        if not self.active:
            return None
        return BlockMod(self.softcap, self.window_mask(q_pos, k_pos))


def skipped(mod: BlockMod | None) -> bool:
    """True when the window hides every key of the block from every query: no call is needed."""
    return mod is not None and mod.masked is not None and bool(mod.masked.all())


def cap_scores(scores: torch.Tensor, softcap: float | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(capped scores, tanh(s / c) for the backward) ; the scores unchanged and None without a cap."""
    if softcap is None:
        return scores, None
    tanh = torch.tanh(scores / softcap)
    return tanh * softcap, tanh


def uncap_grad(dscores: torch.Tensor, tanh: torch.Tensor | None) -> torch.Tensor:
    """dS_raw = dS_capped * (1 - tanh^2(s / c)), in place in both (tanh is used up: no third
    score-sized temporary); dS unchanged without a cap."""
    if tanh is None:
        return dscores
    return dscores.mul_(tanh.square_().neg_().add_(1))


def forward_call(kernel, q, k, v, *, causal: bool, scale: float, mod: BlockMod | None):
    """kernel.forward, given `mod` only when there is one (kernels without mods keep their signature)."""
    extra = {} if mod is None else {"mod": mod}
    return kernel.forward(q, k, v, causal=causal, scale=scale, **extra)


def backward_call(kernel, dout, q, k, v, out, lse, *, causal: bool, scale: float, mod: BlockMod | None):
    """kernel.backward, given `mod` only when there is one."""
    extra = {} if mod is None else {"mod": mod}
    return kernel.backward(dout, q, k, v, out, lse, causal=causal, scale=scale, **extra)
