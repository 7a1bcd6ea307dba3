"""The Megatron flags this planner emits, checked by megatron-core itself (pip package
megatron-core, whose TransformerConfig / ModelParallelConfig validate the parallel and CP
settings and whose DistributedDataParallelConfig holds the FSDP ones); Megatron-LM's
argparse and validate_args are not on PyPI."""

from __future__ import annotations

import dataclasses

import pytest
from megatron.core.distributed import distributed_data_parallel_config as ddp_config
from megatron.core.transformer import transformer_config as core

from sp_planner.flags import render_flags

# The values Transformer Engine accepts for cp_comm_type (transformer_engine/pytorch/attention/
# dot_product_attention/context_parallel.py, attn_forward_func_with_cp); megatron-core passes it on.
TE_CP_COMM_TYPES = {"p2p", "all_gather", "a2a", "a2a+p2p"}


def _config(args: dict[str, list[str]], model) -> object:
    """TransformerConfig from the emitted flags (flag --a-b -> field a_b), as Megatron's
    core_transformer_config_from_args does for these fields."""
    one = lambda flag: args[flag][0]  # noqa: E731
    return core.TransformerConfig(
        num_layers=int(one("--num-layers")), hidden_size=model.hidden_size,
        num_attention_heads=int(one("--num-attention-heads")),
        num_query_groups=int(one("--num-query-groups")) if "--num-query-groups" in args else None,
        tensor_model_parallel_size=int(one("--tensor-model-parallel-size")),
        pipeline_model_parallel_size=int(one("--pipeline-model-parallel-size")),
        context_parallel_size=int(one("--context-parallel-size")),
        cp_comm_type=one("--cp-comm-type") if "--cp-comm-type" in args else None,
        sequence_parallel="--sequence-parallel" in args, bf16=True,
    )


@pytest.mark.parametrize("plan", [
    dict(tp=2, ring=4, cp_comm="allgather", zero=3),
    dict(tp=2, ring=4, cp_comm="allgather", zero=1, dp=2, dp_replicate=2),
    dict(tp=2, ring=2, ulysses=2, zero=2),
], ids=["allgather-fsdp", "allgather-hsdp-distopt", "usp-zero2"])
def test_megatron_core_accepts_the_cp_and_fsdp_flags(build, bash_args, plan):
    request = build.request(build.llama3_8b, 65536, 16, **plan)
    flags = render_flags("megatron", request)
    assert flags.supported, flags.reason
    args = bash_args(flags.text)
    config = _config(args, build.llama3_8b)
    assert config.cp_comm_type in TE_CP_COMM_TYPES
    fields = {f.name for f in dataclasses.fields(ddp_config.DistributedDataParallelConfig)}
    ddp = {}
    if "--data-parallel-sharding-strategy" in args:
        ddp["data_parallel_sharding_strategy"] = args["--data-parallel-sharding-strategy"][0]
        ddp["use_megatron_fsdp"] = True
    if "--num-distributed-optimizer-instances" in args:
        ddp["num_distributed_optimizer_instances"] = int(args["--num-distributed-optimizer-instances"][0])
    if "--use-distributed-optimizer" in args:
        ddp["use_distributed_optimizer"] = True
    assert set(ddp) <= fields
    ddp_config.DistributedDataParallelConfig(**ddp)
    if "data_parallel_sharding_strategy" in ddp:
        # the values the field documents: no_shard, optim, optim_grads, optim_grads_params
        # (distributed_data_parallel_config.py; Megatron-LM arguments.py choices)
        assert ddp["data_parallel_sharding_strategy"] in ("optim_grads", "optim_grads_params")
