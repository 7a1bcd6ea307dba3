"""Online-softmax merge of two partial attention results through their log-sum-exp, in fp32.

out = e^(lse-lse')*out + e^(lse_b-lse')*out_b with lse' = log(e^lse + e^lse_b), written in the
stable sigmoid form of ring-flash-attention's `_update_out_and_lse` (zhuzilin PR #34).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def merge_partial(out: torch.Tensor, lse: torch.Tensor, out_b: torch.Tensor, lse_b: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge (out, lse) with (out_b, lse_b). out: (b, s, h, d); lse: (b, h, s). Returns fp32."""
    lse, lse_b = lse.float(), lse_b.float()
    # (b, h, s) -> (b, s, h, 1) to broadcast over head_dim
    weight_b = torch.sigmoid(lse_b - lse).transpose(1, 2).unsqueeze(-1)
    out = out.float()
    merged_out = out - weight_b * (out - out_b.float())
    merged_lse = lse - F.logsigmoid(lse - lse_b)
    return merged_out, merged_lse
