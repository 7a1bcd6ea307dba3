"""sim.grad_all_reduces: the step-end gradient all-reduces a simulated step runs, by hand, with each
phase recorded (its name, groups, bytes a rank sends, algorithm and rounds) and timed 1 s."""

import numpy as np

from sp_planner.candidates import Candidates
from sp_planner.catalog import load_model
from sp_planner.cost.runtime import FRAMEWORK_RUNTIME, MEGATRON_RUNTIME
from sp_planner.layout import rank_groups
from sp_planner.plan import ParallelPlan
from sp_planner.sim.grad_all_reduces import step_end_all_reduces


def _run(model, plan, runtime, micro_batches=4):
    """(replicated, tied) seconds and the phases run, each 1 s, with its first two groups."""
    calls = []

    def phase(name, groups, nbytes, algorithm, eff, rounds=1, nccl=True):
        calls.append((name, np.asarray(groups).tolist()[:2], nbytes, algorithm, eff, rounds))
        return 1.0

    groups = {k: np.asarray(v) for k, v in rank_groups(plan).items()}
    seconds = step_end_all_reduces(phase, model, Candidates.of_plan(plan), runtime, tp_groups=groups["tp"],
                                   pp_groups=groups["pp"], micro_batches=micro_batches, seq_len=4096)
    return seconds, calls


def test_megatrons_sequence_parallel_norms_one_call_over_each_tp_group():
    # Llama 3 8B, tp 8, pp 1: 32 layers x 2 norms x 4096 + the final norm's 4096 = 266,240 fp32
    # elements; a ring over 8 ranks sends 2 x 7/8 of them, 1,863,680 B (tests/cost/test_replicated_grads.py).
    # Untied, no pipeline: no embedding call.
    seconds, calls = _run(load_model("llama3-8b"), ParallelPlan(tp=8, dp=2, zero=1), MEGATRON_RUNTIME)
    assert seconds == (1.0, 0.0)
    assert calls == [("sequence-parallel grad all-reduce (tp)", [list(range(8)), list(range(8, 16))], 1_863_680.0,
                      "ring", "all_reduce", 2)]


def test_a_tied_embedding_all_reduces_over_each_pipelines_two_ends():
    # GPT-3 175B, tp 8, pp 8, dp 2 (128 ranks, pp outermost): the ends of the first pipeline are
    # ranks 0 and 7 x 16 = 112, and each holds 50,257 x 12,288 / 8 fp32 gradients, 308,779,008 B
    # (tests/cost/test_tied_embedding.py), sent once by a two-rank ring.
    seconds, calls = _run(load_model("GPT-3-175B"), ParallelPlan(tp=8, pp=8, dp=2, zero=1), MEGATRON_RUNTIME)
    assert seconds == (1.0, 1.0)
    assert calls[-1] == ("embedding grad all-reduce (pipeline ends)", [[0, 112], [1, 113]], 50257 * 12288 * 4 / 8,
                         "ring", "all_reduce", 2)


def test_torchtitans_per_parameter_calls_every_micro_batch_under_zero3():
    # torchtitan sums no sequence-parallel buffer but all-reduces each Partial norm gradient on its
    # own: 32 x 2 + 1 = 65 calls of a 4096-element bf16 gradient, 8192 B, of which a ring over tp 2
    # sends 2 x 1/2, in each of the 4 micro-batches' backward under ZeRO-3: 260 phases' seconds.
    seconds, calls = _run(load_model("llama3-8b"), ParallelPlan(tp=2, dp=4, zero=3), FRAMEWORK_RUNTIME["torchtitan"])
    assert seconds == (65 * 4 * 1.0, 0.0)
    assert calls == [("norm grad all-reduce (tp, per parameter)", [[0, 1], [2, 3]], 8192.0, "ring", "all_reduce", 2)]
