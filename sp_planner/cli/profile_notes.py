"""One-line notes on how the hardware profile, as given, meets the job sp-plan is asked to plan.

A profile whose GPU is no built-in's, a built-in's copy with attention curves of its own, a node
size or GPU count that departs from the profile's hosts or NVLink domains, a framework whose flags
are for other chips than the profile's: each is planned for all the same, and the note says what
the plans then assume. None where there is nothing to say.
"""

from __future__ import annotations

from sp_planner.catalog import builtin_gpu
from sp_planner.catalog.hardware import builtin_profiles
from sp_planner.cost.attention_kernels import kernel_curves, measured_attention, own_attention
from sp_planner.cost.families import on_npu
from sp_planner.specs.hardware import HardwareProfile


def generic_gpu_note(profile: HardwareProfile) -> str | None:
    """One line for a user profile whose GPU is no built-in's (no base_profile, a name of its own):
    the cost model's tables keyed by GPU (cost.families.profile_key) have nothing for it; None otherwise."""
    if builtin_gpu(profile) is not None:
        return None
    # A renamed copy of a built-in profile (README: "a built-in GPU under another name says so with
    # base_profile") keeps its peak and memory: name the built-ins it may be.
    alike = [name for name, builtin in builtin_profiles().items()
             if (builtin.peak_bf16_flops, builtin.hbm_bytes) == (profile.peak_bf16_flops, profile.hbm_bytes)]
    if len(alike) == 1:
        fix = f"its peak and memory are {alike[0]}'s: if that is its GPU, add base_profile: {alike[0]}"
    elif alike:
        fix = f"its peak and memory are those of {' and '.join(alike)}: if its GPU is one, add base_profile: NAME"
    else:
        fix = "if its GPU is a built-in profile's, add base_profile: NAME"
    return (f"hardware profile {profile.name!r} names no built-in GPU (base_profile); kernel curves, best "
            f"published MFU, GEMM and host tables fall back to generic values; {fix}")


def edited_curves_note(profile: HardwareProfile, runs: str, chosen: str | None) -> str | None:
    """One line for a copy of a built-in profile whose attention curves were edited (own_attention,
    not sp-calibrate's): they time the plans in place of the published curves of `runs`, the
    framework's kernel; None otherwise, or where --attention-kernel (`chosen`) named a kernel."""
    if chosen is not None or measured_attention(profile) or not own_attention(profile) \
            or kernel_curves(profile, runs) is None:
        return None
    return (f"hardware profile {profile.name!r} holds attention curves of its own (not {builtin_gpu(profile)}'s): "
            f"they time the plans in place of {runs}'s published ones; --attention-kernel {runs} times those")


def node_size_note(profile: HardwareProfile, gpus_per_node: int) -> str | None:
    """One line when --gpus-per-node departs from the profile's hosts in a way that changes the
    links the plans are costed on (HardwareProfile.link_domain_gpus): a multi-host NVLink domain
    is kept only for the profile's own host size, and a larger node is assumed to join all its
    GPUs by the intra-node links. None when nothing changes."""
    own, link = profile.gpus_per_node, profile.intra_node.kind
    if profile.nvlink_domain_gpus is not None and gpus_per_node != own:
        return (f"--gpus-per-node {gpus_per_node} is not {profile.name}'s {own}-GPU host, so its "
                f"{profile.nvlink_domain_gpus}-GPU NVLink domain is not used: each node's {gpus_per_node} GPUs are "
                f"one {link} domain and nodes talk over {profile.inter_node.kind}")
    if gpus_per_node > own:
        return (f"--gpus-per-node {gpus_per_node} is more than {profile.name}'s {own} GPUs per node: the plans "
                f"assume its intra-node links ({link}) join all {gpus_per_node}")
    return None


def framework_device_note(profile: HardwareProfile, framework: str) -> str | None:
    """One line when the chosen framework's flags are for other chips than the profile's:
    MindSpeed runs only on Ascend NPUs (torch_npu), and Megatron-LM reaches those only through it;
    the other frameworks' flags and notes assume CUDA GPUs (NCCL, Transformer Engine, flash-attn).
    None where they match (and for --framework all on GPUs, where MindSpeed's are one of many)."""
    npu = on_npu(profile)
    if framework == "mindspeed" and not npu:
        return (f"MindSpeed runs on Ascend NPUs (torch_npu) only and {profile.name} is no NPU: the plans are "
                "ranked by MindSpeed's rules; for GPUs plan with --framework megatron")
    if not npu or framework == "mindspeed":
        return None
    if framework == "all":
        return (f"on {profile.name} only MindSpeed's flags are for Ascend NPUs; the other frameworks' assume "
                "CUDA GPUs (NCCL, Transformer Engine, flash-attn)")
    if framework == "megatron":
        return (f"Megatron-LM runs on Ascend NPUs through MindSpeed: for {profile.name} plan with --framework "
                "mindspeed; the megatron flags and notes assume CUDA GPUs (Transformer Engine, NCCL)")
    return (f"the {framework} flags and notes assume CUDA GPUs (NCCL, flash-attn); on {profile.name} run its "
            "Ascend port (torch_npu, HCCL) and check each flag there")


def domain_split_note(profile: HardwareProfile, gpus_per_node: int, num_nodes: int) -> str | None:
    """One line when the job's GPUs fill no whole number of the profile's multi-host NVLink
    domains, so the plans are costed on a smaller share of each (HardwareProfile.link_domain_gpus:
    76 GB200 GPUs are 19 domains of 4, every group wider than a host on the network). None when
    the domain is the profile's own, or the job fits in one or fills whole ones."""
    domain = profile.nvlink_domain_gpus
    world = gpus_per_node * num_nodes
    if domain is None or gpus_per_node != profile.gpus_per_node or world <= domain or world % domain == 0:
        return None
    used = profile.link_domain_gpus(gpus_per_node, world)
    return (f"{world} GPUs fill no whole number of {profile.name}'s {domain}-GPU NVLink domains: the plans assume "
            f"{world // used} domains of {used} GPUs each, groups wider than {used} GPUs on "
            f"{profile.inter_node.kind}")
