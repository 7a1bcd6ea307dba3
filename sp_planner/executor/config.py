"""What one attention run is: degrees, shapes, dtype, kernel. Torch-free, so the CLI can check it
before anything is launched."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sp_planner.cost.attention_comm import kv_heads_per_tp_rank
from sp_planner.errors import UserInputError
from sp_planner.executor.kernel_rules import kernel_problems
from sp_planner.plan import MAX_DEGREE, ATTENTION_RULES, CpComm, ParallelPlan, RingLayout, RuleFacts, facts_violations
from sp_planner.specs.base import FrozenModel
from sp_planner.specs.model import MAX_HEAD_DIM, MAX_HEADS, softmax_scale_or_default
from sp_planner.specs.workload import MAX_GLOBAL_BATCH, MAX_SEQ_LEN

MAX_ITERS = 10_000  # timed iterations: a median needs a handful, not millions
MAX_SCORE_FACTOR = 1e6  # softmax scale and softcap: far above any model's (DeepSeek-V3 0.135, Gemma 2 50)
DType = Literal["float32", "bfloat16", "float16"]
Device = Literal["cpu", "cuda"]
WindowKind = Literal["sliding", "chunked"]
Kernel = Literal["auto", "math"]  # auto: flash kernel returning the LSE; math: the explicit fp32 implementation
ELEM_BYTES: dict[str, int] = {"float32": 4, "bfloat16": 2, "float16": 2}


class RunConfig(FrozenModel):
    """One attention layer run. Heads are the model's; the executor runs one TP rank's share
    (num_heads/tp query heads, Megatron's KV-head count per TP rank)."""

    ulysses: int = Field(ge=1, le=MAX_DEGREE)
    ring: int = Field(ge=1, le=MAX_DEGREE)
    batch: int = Field(default=1, ge=1, le=MAX_GLOBAL_BATCH)
    seq_len: int = Field(gt=0, le=MAX_SEQ_LEN, description="global tokens per sequence")
    num_heads: int = Field(gt=0, le=MAX_HEADS)
    num_kv_heads: int = Field(gt=0, le=MAX_HEADS)
    head_dim: int = Field(gt=0, le=MAX_HEAD_DIM, description="head dim of queries and keys")
    # MLA (DeepSeek-V2/V3): values, and so the output, of another head dim than queries and keys
    # (qk_nope + qk_rope = 192, v 128). None: head_dim.
    v_head_dim: int | None = Field(default=None, gt=0, le=MAX_HEAD_DIM)
    # The factor on q.k before the softmax (Gemma 2/3 query_pre_attn_scalar**-0.5, DeepSeek-V3's
    # YaRN mscale^2/sqrt(192): ModelSpec.softmax_scale). None: 1/sqrt(head_dim), q/k's.
    softmax_scale: float | None = Field(default=None, gt=0, le=MAX_SCORE_FACTOR, allow_inf_nan=False)
    # Gemma 2: scaled scores s -> softcap * tanh(s / softcap) before the softmax (executor.score_mod).
    softcap: float | None = Field(default=None, gt=0, le=MAX_SCORE_FACTOR, allow_inf_nan=False)
    # Local attention (ModelSpec.window): a query sees the `window` keys ending at itself
    # (sliding), or the keys of its own window-long chunk (chunked). None: the whole causal prefix.
    window: int | None = Field(default=None, gt=0, le=MAX_SEQ_LEN)
    window_kind: WindowKind = "sliding"
    tp: int = Field(default=1, ge=1, le=MAX_DEGREE, description="heads are divided by tp (from a plan)")
    causal: bool = False
    ring_layout: RingLayout = "contiguous"
    cp_comm: CpComm = "p2p"  # the ring axis: K/V passed round the ring, or all-gathered
    dtype: DType = "float32"
    device: Device = "cpu"
    kernel: Kernel = "auto"
    iters: int = Field(default=3, ge=0, le=MAX_ITERS, description="timed iterations after the validated one")
    seed: int = 0
    # Ranks per node (torchrun's --nproc-per-node, the plan's GPUs per node): every rank checks
    # LOCAL_WORLD_SIZE against it. None: one node holds all ulysses*ring ranks.
    nproc_per_node: int | None = Field(default=None, ge=1, le=MAX_DEGREE)
    # Test/debug only: this rank raises (or hangs) after joining the process group.
    debug_fail_rank: int | None = None
    # kill: SIGKILL itself, as the OOM killer does; stuck: hang deaf to SIGTERM, as a rank inside a long
    # kernel or a blocking C++ call is (Python runs its handler only when the call returns).
    debug_fail_mode: Literal["raise", "hang", "kill", "stuck"] = "raise"

    @property
    def world_size(self) -> int:
        return self.ulysses * self.ring

    @property
    def ranks_per_node(self) -> int:
        return self.nproc_per_node or self.world_size

    @property
    def num_nodes(self) -> int:
        return self.world_size // self.ranks_per_node

    def job_plan(self) -> ParallelPlan:
        """The plan of the job sp-run runs: one attention group, ulysses x ring ranks (dp, pp and tp
        of a plan file are 1 here; tp only divides the heads)."""
        return ParallelPlan(ulysses=self.ulysses, ring=self.ring, ring_layout=self.ring_layout,
                            cp_comm=self.cp_comm)

    @property
    def v_dim(self) -> int:
        """Head dim of V and the output (head_dim unless MLA's v_head_dim differs)."""
        return self.v_head_dim or self.head_dim

    @property
    def scale(self) -> float:
        """The softmax scale the run applies: softmax_scale, else 1/sqrt(q/k head dim)."""
        return softmax_scale_or_default(self.softmax_scale, self.head_dim)

    @property
    def kernel_head_dim(self) -> int:
        """The head dim a kernel taking one for q, k and v runs (executor.head_dims pads to it)."""
        return max(self.head_dim, self.v_dim)

    @property
    def mean_head_dim(self) -> float:
        """(q/k + v head dims) / 2: the one head dim whose Q+K+V+O bytes and FLOPs equal the run's
        (ModelSpec's head_dim under MLA), for the cost model's time and memory."""
        return (self.head_dim + self.v_dim) / 2

    @property
    def score_mods(self) -> bool:
        """A logit softcap or a window: only the math kernel applies them (executor.score_mod)."""
        return self.softcap is not None or self.window is not None

    @property
    def math_kernel(self) -> bool:
        """kernels.select_kernel runs the math kernel: asked for (--kernel math), or score_mods."""
        return self.kernel == "math" or self.score_mods

    @property
    def heads_per_tp_rank(self) -> int:
        return self.num_heads // self.tp

    @property
    def kv_heads_per_tp_rank(self) -> int:
        return int(kv_heads_per_tp_rank(self.num_kv_heads, self.tp))

    @property
    def elem_bytes(self) -> int:
        return ELEM_BYTES[self.dtype]

    def as_plan(self) -> ParallelPlan:
        return ParallelPlan(tp=self.tp, ulysses=self.ulysses, ring=self.ring, ring_layout=self.ring_layout,
                            cp_comm=self.cp_comm)


def config_problems(cfg: RunConfig) -> list[str]:
    """The planner's rules that an attention run must obey (plan.ATTENTION_RULES), then the
    launch's own (whole nodes, debug rank), one line each."""
    problems: list[str] = []
    if cfg.num_heads % cfg.num_kv_heads != 0:
        problems.append(f"heads {cfg.num_heads} must be a multiple of kv heads {cfg.num_kv_heads}")
    facts = RuleFacts(num_heads=cfg.num_heads, num_kv_heads=cfg.num_kv_heads, seq_len=cfg.seq_len)
    problems += [v.message for v in facts_violations(facts, cfg.as_plan(), ATTENTION_RULES)]
    per_node = cfg.ranks_per_node
    if per_node > cfg.world_size or cfg.world_size % per_node != 0:
        problems.append(f"ulysses*ring = {cfg.world_size} ranks do not fill whole nodes of "
                        f"{per_node} ranks (--nproc-per-node must divide {cfg.world_size})")
    if cfg.debug_fail_rank is not None and not 0 <= cfg.debug_fail_rank < cfg.world_size:
        problems.append(f"debug fail rank {cfg.debug_fail_rank} is not a rank of world size {cfg.world_size}")
    if cfg.window is not None and not cfg.causal:
        problems.append(f"a {cfg.window_kind} window ({cfg.window} tokens) is a causal model's local attention; "
                        "add --causal")
    if cfg.window is not None and cfg.window >= cfg.seq_len:
        # A query sees at most seq_len keys, so such a window masks nothing: the run would be plain
        # causal attention reported as a windowed one.
        problems.append(f"a {cfg.window_kind} window of {cfg.window} tokens covers the whole {cfg.seq_len}-token "
                        "sequence, which is full causal attention: give --window below --seq-len, or drop it")
    if not cfg.score_mods:  # with them the math kernel runs, which takes any head dim
        problems += kernel_problems(device=cfg.device, kernel=cfg.kernel, head_dim=cfg.kernel_head_dim,
                                     elem_bytes=cfg.elem_bytes)
    return problems


def check_config(cfg: RunConfig) -> None:
    """Raise UserInputError (exit 2 in the CLI) naming every broken rule."""
    problems = config_problems(cfg)
    if problems:
        raise UserInputError("; ".join(problems))
