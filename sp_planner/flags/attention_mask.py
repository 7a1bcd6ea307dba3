"""The attention mask a Megatron-based framework builds beside the kernel's own causal masking, which
the plan's memory does not count, turned off (Megatron-LM) or kept compressed (MindSpeed).

Megatron-LM's dataloader builds a dense causal mask for every sample unless told not to
(GPTDatasetConfig.create_attention_mask, default True: megatron/core/datasets/gpt_dataset.py at
d98e8a6 line 38; _get_ltor_masks_and_position_ids, lines 833-836 and 871-872, builds
torch.tril(torch.ones((s, s))) in float32, 4 s^2 bytes, then its s^2-byte bool copy, cached per
dataset at lines 289-305). get_batch (pretrain_gpt.py lines 110-152) moves the [mbs, 1, s, s] bool
mask to the GPU and broadcasts it over the TP group on the first and last stages
(megatron/core/utils.py get_batch_on_this_tp_rank, lines 2167-2425), and CP ranks copy their slices
of it (_get_batch_on_this_cp_rank_per_sequence_balancing, line 2548). The Transformer Engine
attention the plan times masks causally by its mask type and needs none of it.
`--no-create-attention-mask-in-dataloader` (arguments.py line 3332, dest
create_attention_mask_in_dataloader; pretrain_gpt.py lines 120 and 419) turns it off; it exists
since core_v0.6.0 (e7f376c92e, "skip unnecessary attention mask generation", 2024-03-26), below every
Megatron-LM release sp-plan's flags cite (core_v0.12.1 on), and Megatron-LM's own Llama-3 and
Megatron-FSDP examples pass it (examples/llama/train_llama3_8b_h100_fp8.sh lines 143, 155).

MindSpeed-LLM decides the dataloader mask itself, off for a causal mask with fused attention
(TrainingBasicFeature.pre_validate_args, mindspeed_llm/features_manager/megatron_basic/
training_basic.py at c77308a1 lines 23-33, since ModelLink 0b0c9fce 2024-06-21), so the flag would be
overridden; what it needs is --use-flash-attn: npu_fusion_attention, as the plan times it, with
MindSpeed's compressed 2048 x 2048 bool causal mask (4 MiB a process, sparse_mode 2:
mindspeed/model/transformer.py get_attention_mask / generate_attention_mask at Ascend/MindSpeed
028de58c lines 47-101), inside the memory model's reserve (cost.runtime_memory). Without it,
generate_attention_mask builds a dense [mbs, 1, s, s] bool mask (lines 52-53), and at cp 1
MindSpeed-LLM's CustomDotProductAttention refuses to run (custom_dot_product_attention.py lines
70-73); its CP algorithms bar all-gather set it themselves (mindspeed/features_manager/
context_parallel/context_parallel_feature.py lines 51, 80; ulysses_context_parallel.py line 34).

MindSpeed has no flag that trains a GPT model bidirectionally, so a non-causal plan is refused.
--attention-mask-type (choices causal, general; default causal at every cp: MindSpeed-LLM
context_parallel_feature.py lines 31-37) picks where the mask comes from, not whether it is causal:
causal is the compressed mask above; general takes the dataloader's mask (training_basic.py lines
26-31), which the GPT dataset builds as torch.tril(ones(s, s)) < 0.5, lower-triangular (Megatron-Core
0.12.1's megatron/core/datasets/gpt_dataset.py lines 653-656, 692; MindSpeed-LLM's copy, lines
321-324 and 358-360, the same), and hands to npu_fusion_attention as is at cp 1
(custom_dot_product_attention.py lines 266-274, 409-426; sparse mode 0 with --next-tockens 0,
fusion_attention_feature.py lines 14-19) and split per CP rank under CP
(core/context_parallel/get_batch_utils.py lines 35-36, 59-67). MindSpeed's docs say both give the
same result, general being the full-computation baseline (Ascend/MindSpeed
docs/zh/features/eod-reset.md line 20; generate-mask.md lines 15 and 59: the masks are
lower-triangular, other masks need code). Only a None mask runs npu_fusion_attention unmasked
(docs/zh/ops/fusion_attention.md line 102), and no flag gives one to a causal layer spec.

MLA keeps the compressed mask: sp-plan spells it as Megatron's --multi-latent-attention
(flags.megatron.common_groups). MindSpeed's generate_mask.get_attention_mask, which its Transformer
Engine and local attentions call at cp 1 (mindspeed/te/pytorch/attention/dot_product_attention/
dot_product_attention.py lines 613-617; core/transformer/flash_attention/generate_mask/adaptor.py
lines 26-31) and MindSpeed-LLM's all-gather CP (te_cp_dot_product_attention.py lines 250-256),
builds an uncompressed s x s bool mask (s^2 bytes, 1 GiB at 32K) only when
config.multi_head_latent_attention is set (generate_mask/generate_mask.py lines 44-56, 65-68): by
MindSpeed's own spelling --multi-head-latent-attention (features_manager/transformer/
multi_head_latent_attention/mla_feature.py lines 24-29; every arg is copied onto the config,
core/transformer/transformer_config.py lines 185-197). MindSpeed-LLM stores that spelling as
deprecated_multi_head_latent_attention (features_manager/arguments/deprecated_args.py lines 44,
103-107), and its cp-1 CustomDotProductAttention takes mindspeed/model/transformer.py's mask,
compressed for any causal run (lines 75-78).

Megatron-DeepSpeed (deepspeedai/Megatron-DeepSpeed at 4efb479d) skips the mask only under a flash
attention flag (pretrain_gpt.py line 116, skip_mask), else get_ltor_masks_and_position_ids builds it
on the GPU every step, float32 then bool (megatron/utils.py lines 180-182 and 220-221); and unless
--no-pipeline-parallel, model_provider builds GPTModelPipe and precomputes the same mask on the GPU,
kept in args.attn_mask (pretrain_gpt.py lines 51-76). Its Ulysses examples pass both flags
(examples_deepspeed/sequence_parallel/ds_pretrain_gpt_6.7B_fpdt_32k.sh lines 295 and 332, FA2).
"""

from __future__ import annotations

from sp_planner.flags.base import FlagGroup, FlagRequest
from sp_planner.units import format_bytes

# Megatron-LM's flag that turns the dataloader's dense mask off (arguments.py at d98e8a6 line 3332).
NO_DATALOADER_MASK = "--no-create-attention-mask-in-dataloader"
# MindSpeed's fused attention (Megatron-LM's flag, arguments.py at core_v0.12.1 line 1703).
USE_FLASH_ATTN = "--use-flash-attn"
MASK_BYTES_PER_ELEM = 1  # torch.bool
FLOAT32_MASK_BYTES_PER_ELEM = 4  # torch.ones' default dtype, which the masks are built in
COMPRESSED_MASK_TOKENS = 2048  # MindSpeed's compressed causal mask side (generate_attention_mask)


def dense_mask_bytes(seq_len: int) -> int:
    """Bytes of one sample's dense [s, s] bool mask on the GPU (a float32 one, 4x, while built)."""
    return seq_len * seq_len * MASK_BYTES_PER_ELEM


def mask_groups(request: FlagRequest, *, mindspeed: bool = False) -> list[FlagGroup]:
    """The flag that keeps the dense s x s mask out of a Megatron-LM or MindSpeed run (hyphenated
    "s-by-s" in the comment, which wraps at spaces)."""
    s = request.workload.seq_len
    dense = f"{format_bytes(dense_mask_bytes(s))} a sample at {s}"
    if mindspeed:
        # Causal: MindSpeed refuses a non-causal plan (mindspeed_non_causal_failures).
        compressed = format_bytes(dense_mask_bytes(COMPRESSED_MASK_TOKENS))
        return [(f"fused attention (npu_fusion_attention) as the plan times it, with MindSpeed's compressed "
                 f"{COMPRESSED_MASK_TOKENS}-by-{COMPRESSED_MASK_TOKENS} causal mask ({compressed}), not a dense "
                 f"s-by-s one ({dense})", [USE_FLASH_ATTN])]
    return [(f"no dense s-by-s attention mask from the dataloader, which the plan does not count ({dense} "
             "on the GPU, 4x that in float32 on the host); the attention kernel masks causally itself",
             [NO_DATALOADER_MASK])]


def mindspeed_non_causal_failures(request: FlagRequest) -> list[str]:
    """A non-causal plan, which MindSpeed's flags cannot express (module docstring)."""
    if request.workload.causal:
        return []
    return ["a non-causal (bidirectional) plan cannot be expressed: MindSpeed trains a GPT model causally "
            "under either --attention-mask-type (causal: its compressed causal mask; general: the "
            "dataloader's mask, which MindSpeed-LLM's GPT dataset builds lower-triangular); plan a causal "
            "workload (\"causal\": true)"]


def megatron_non_causal_failures(request: FlagRequest) -> list[str]:
    """A non-causal plan, which Megatron-LM's flags cannot express: its GPT layer specs fix the
    self-attention's attn_mask_type to AttnMaskType.causal, and no argument changes it
    (megatron/core/models/gpt/gpt_layer_specs.py at d98e8a64, lines 120, 143, 269, 299, 322)."""
    if request.workload.causal:
        return []
    return ["a non-causal (bidirectional) plan cannot be expressed: Megatron-LM's GPT layer specs fix "
            "attn_mask_type to causal (gpt_layer_specs.py) and no flag changes it; plan a causal workload "
            "(\"causal\": true), or run bidirectional attention with yunchang"]


def megatron_deepspeed_mask_note(request: FlagRequest) -> str:
    """What keeps Megatron-DeepSpeed's dense mask out and runs the FA2 the plan times (module docstring)."""
    s = request.workload.seq_len
    return (f"Pass --use-flash-attn-v2 (FA2, as the plan times it) and --no-pipeline-parallel, "
            "as its Ulysses examples do; without a flash flag its get_batch builds a dense s x s causal mask on "
            f"the GPU every step ({format_bytes(FLOAT32_MASK_BYTES_PER_ELEM * dense_mask_bytes(s))} in float32 "
            f"at {s}, then bool), and without --no-pipeline-parallel GPTModelPipe keeps one from the start; "
            "the plan counts neither.")
