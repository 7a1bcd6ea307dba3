"""What each framework's emitted flags make it overlap is what the cost model assumes for it
(cost.runtime.FRAMEWORK_RUNTIME), read back from the rendered text for every ZeRO stage the
framework can express."""

from __future__ import annotations

import json
import tomllib

import pytest

from sp_planner.cost.runtime import FRAMEWORK_RUNTIME
from sp_planner.flags import render_flags


def _megatron(text: str, zero: int) -> dict[str, bool]:
    flags = text.split()
    grad = "--overlap-grad-reduce" in flags
    read = {"grad_all_reduce" if zero == 0 else "grad_reduce": grad}
    if zero == 1:
        assert "--use-distributed-optimizer" in flags
        read["param_gather"] = "--overlap-param-gather" in flags
    return read


def _deepspeed(text: str, zero: int) -> dict[str, bool]:
    config = json.loads(text)["zero_optimization"]
    assert config["stage"] == zero
    if zero == 0:
        return {"grad_all_reduce": False}  # stage 0 all-reduces after the backward
    # overlap_comm defaults to True for stage 3 only (runtime/zero/config.py).
    read = {"grad_reduce": config.get("overlap_comm", zero == 3)}
    if zero in (1, 2):
        read["param_gather"] = False  # no option: gathered after step()
    else:
        read["zero3_prefetch"] = config.get("stage3_prefetch_bucket_size", 1) > 0
    return read


def _torchtitan(text: str, zero: int) -> dict[str, bool]:
    parallelism = tomllib.loads(text.split("\n", 1)[1])["parallelism"]
    if zero == 0 and parallelism["data_parallel_shard_degree"] == 1 and "fsdp_reshard_after_forward" not in parallelism:
        return {"grad_all_reduce": True}  # DDP's bucketed all-reduce hooks
    reshard = parallelism.get("fsdp_reshard_after_forward", "default")
    read = {"grad_reduce": True}  # FSDP2 reduce-scatters in its post-backward hooks
    if zero in (1, 2):
        assert reshard == "never"
        # Gathered layer by layer, prefetched; FSDP2 reshards after backward, so every
        # micro-batch's forward gathers: costed as ZeRO-3 keeping parameters (cost.fsdp).
        read["param_gather"] = True
    elif zero == 3:
        assert reshard == "always"  # gathers again in the backward: cost.comm counts 2 per micro-batch
        read["zero3_prefetch"] = True
    return read


READERS = {"megatron": _megatron, "mindspeed": _megatron, "deepspeed": _deepspeed, "torchtitan": _torchtitan}


@pytest.mark.parametrize("framework", sorted(READERS))
@pytest.mark.parametrize("zero", [0, 1, 2, 3])
def test_emitted_flags_overlap_what_the_model_assumes(build, framework, zero):
    if framework == "deepspeed":
        request = build.request(build.llama3_8b, 65536, 8, ulysses=4, dp=2, zero=zero)
    elif framework == "torchtitan":  # read from the 0.2.x TOML form (the 0.3.x overrides set the same keys)
        request = build.request(build.llama3_8b, 65536, 8, ring=4, dp=2, zero=zero).model_copy(
            update={"framework_version": "0.2.2"})
    else:
        request = build.request(build.llama3_8b, 65536, 8, tp=2, ulysses=2, dp=2, zero=zero)
    flags = render_flags(framework, request)
    if not flags.supported:
        assert zero >= 2 and framework in ("megatron", "mindspeed")  # ZeRO-1 only there
        return
    read = READERS[framework](flags.text, zero)
    model = FRAMEWORK_RUNTIME[framework].overlap
    assert read == {name: getattr(model, name) for name in read}
    assert not model.tp_comm and "--tp-comm-overlap" not in flags.text
    # Nor the EP all-to-all overlap (cost.ep_overlap), which only corpus rows state.
    assert not model.ep_comm and "overlap-moe-expert-parallel-comm" not in flags.text


def test_yunchang_states_the_overlap_it_was_timed_with(build):
    request = build.request(build.llama3_8b, 65536, 8, ulysses=4, dp=2, zero=1)
    notes = " ".join(render_flags("yunchang", request).notes)
    assert FRAMEWORK_RUNTIME["yunchang"].overlap == FRAMEWORK_RUNTIME["deepspeed"].overlap
    assert '"overlap_comm": true' in notes and "exposed after the step" in notes


def test_megatron_rings_run_transformer_engines_ring_as_timed(build):
    # A ring plan renders Megatron's TE context parallelism with the P2P ring (--cp-comm-type p2p,
    # a2a+p2p under Ulysses), which is Transformer Engine's AttnFuncWithCPAndKVP2P: the ring the
    # model times for Megatron (cost.ring_impl). yunchang's own ring is its plans' (and DeepSpeed's).
    from sp_planner.cost.ring_impl import TE_RING, YUNCHANG_RING

    text = render_flags("megatron", build.request(build.llama3_8b, 65536, 8, ring=4, dp=2, zero=1)).text.split()
    assert text[text.index("--cp-comm-type") + 1] == "p2p"
    assert FRAMEWORK_RUNTIME["megatron"].ring == TE_RING
    assert FRAMEWORK_RUNTIME["yunchang"].ring == FRAMEWORK_RUNTIME["deepspeed"].ring == YUNCHANG_RING


@pytest.mark.parametrize("framework", ["megatron", "mindspeed"])
@pytest.mark.parametrize("zero", [0, 1])
def test_megatron_flags_leave_the_gradient_passes_the_model_counts(build, framework, zero):
    # Megatron DDP's NaN-check norm and in-place 1/dp scaling (cost.grad_buffer) are what the
    # emitted flags leave on: no --no-check-for-nan-in-loss-and-grad, no --ddp-average-in-collective.
    flags = render_flags(framework, build.request(build.llama3_8b, 65536, 8, tp=2, ulysses=2, dp=2, zero=zero))
    words = flags.text.split()
    sync = FRAMEWORK_RUNTIME[framework].grad_sync
    assert sync is not None and sync.wrapper == "megatron"
    assert ("--no-check-for-nan-in-loss-and-grad" not in words) == sync.check_for_nan_in_grad
    assert ("--ddp-average-in-collective" in words) == sync.average_in_collective


@pytest.mark.parametrize("framework", ["megatron", "mindspeed"])
def test_interleaved_pipeline_sends_overlap_as_the_model_assumes(build, framework):
    # Virtual stages (which set args.virtual_pipeline_model_parallel_size) and no
    # --no-overlap-p2p-communication: Megatron's arguments.py keeps overlap_p2p_comm at its default,
    # True, on the interleaved schedule (cost.overlap).
    request = build.request(build.llama3_8b, 65536, 8, tp=2, pp=2, vpp=2, dp=2, zero=1)
    flags = render_flags(framework, request).text.split()
    assert any(flag in flags for flag in ("--num-virtual-stages-per-pipeline-rank",
                                          "--num-layers-per-virtual-pipeline-stage"))
    assert "--no-overlap-p2p-communication" not in flags
    assert FRAMEWORK_RUNTIME[framework].overlap.pp_p2p
    # Nor --no-align-grad-reduce: each chunk's gradient sync launched whole after its last
    # micro-batch (training.py grad_sync_func), as Overlap.aligned_grad_reduce says.
    assert "--no-align-grad-reduce" not in flags
    assert FRAMEWORK_RUNTIME[framework].overlap.aligned_grad_reduce


@pytest.mark.parametrize("framework", ["deepspeed", "torchtitan", "yunchang"])
def test_other_frameworks_pipeline_sends_are_modelled_blocking(framework):
    # DeepSpeed's PipelineEngine and torchtitan's schedules are timed with blocking sends; yunchang
    # runs no pipeline.
    assert not FRAMEWORK_RUNTIME[framework].overlap.pp_p2p


@pytest.mark.parametrize("framework", ["megatron", "mindspeed"])
def test_tensor_parallel_plans_run_sequence_parallelism_as_the_model_assumes(build, framework):
    # Every framework runtime times TP with sequence parallelism (Runtime.sequence_parallel: the norms
    # and residual adds split over the TP ranks, cost.gemm_work); Megatron's and MindSpeed's flags
    # turn it on with TP (DeepSpeed and yunchang emit no TP; torchtitan's TP plan shards its norms
    # with SequenceParallel).
    flags = render_flags(framework, build.request(build.llama3_8b, 65536, 8, tp=2, ulysses=2, dp=2, zero=1))
    assert "--sequence-parallel" in flags.text.split()
    assert all(runtime.sequence_parallel for runtime in FRAMEWORK_RUNTIME.values())
