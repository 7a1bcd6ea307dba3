"""What each framework's loss holds at its peak (cost.loss_memory), derived by hand from the
tensors alive at that moment (the module docstring has the source lines)."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.loss_memory import (
    MEGATRON_LOSS,
    TORCH_CROSS_ENTROPY_LOSS,
    TORCHTITAN_CHUNKED_LOSS,
    TORCHTITAN_V02_LOSS,
    loss_peak_bytes,
)
from sp_planner.cost.runtime import framework_runtime
from sp_planner.plan import ParallelPlan
from sp_planner.search import evaluate
from sp_planner.specs import Workload

LLAMA3_8B = load_model("llama3-8b")  # h 4096, V 128256
LLAMA31_405B = load_model("Llama-3.1-405B")  # h 16384, V 128256


def _peak(loss, model, *, tokens=8192, tp, pp=1, micro_batch=1):
    return float(loss_peak_bytes(loss, tokens=np.array([float(tokens)]), vocab_size=model.vocab_size,
                                 hidden_size=model.hidden_size, tp=np.array([tp]), pp=np.array([pp]),
                                 micro_batch=np.array([micro_batch]))[0])


def test_the_models_sizes():
    assert (LLAMA3_8B.hidden_size, LLAMA3_8B.vocab_size) == (4096, 128256)
    assert (LLAMA31_405B.hidden_size, LLAMA31_405B.vocab_size) == (16384, 128256)


def test_torchtitan_02_holds_loss_parallels_four_fp32_tensors_a_logit():
    # Llama-3-8B at 8K tokens, tp 2: 8192 x 64128 = 525,336,576 logits on a rank. loss_parallel's
    # backward holds the saved log-softmax, grad_input, exp(x) and their sum, 4 x 4 B, the bf16
    # logits deleted (train.py `del pred`): 8,405,385,216 B; under PP the stage keeps the bf16
    # logits too: 18 B, 9,456,058,368 B.
    assert _peak(TORCHTITAN_V02_LOSS, LLAMA3_8B, tp=2) == 16 * 525_336_576 == 8_405_385_216
    assert _peak(TORCHTITAN_V02_LOSS, LLAMA3_8B, tp=2, pp=2) == 18 * 525_336_576 == 9_456_058_368
    # tp 1: F.cross_entropy's backward, three fp32 tensors (12 B) on 8192 x 128256 logits.
    assert _peak(TORCHTITAN_V02_LOSS, LLAMA3_8B, tp=1) == 12 * 8192 * 128256 == 12_608_077_824


def test_torchtitan_03_holds_one_chunk_of_eight_and_an_fp32_gradient_buffer():
    # Llama-3-8B at 8K tokens, tp 2: a chunk is 1024 tokens x 64128 = 65,667,072 logits, held at
    # 18 B in _LossParallelCrossEntropy's backward (16 B fp32 + the chunk's bf16 logits):
    # 1,182,007,296; beside GradAccumulator's fp32 buffer, 4 x 8192 x 4096 = 134,217,728.
    # The end (a bf16 cast of the buffer 67,108,864 and the last chunk's logits 131,334,144) is less.
    assert _peak(TORCHTITAN_CHUNKED_LOSS, LLAMA3_8B, tp=2) == 1_182_007_296 + 134_217_728 == 1_316_225_024
    # A quarter of the whole-logits count before it (10 B x 525,336,576 = 5,253,365,760).
    assert _peak(TORCHTITAN_CHUNKED_LOSS, LLAMA3_8B, tp=2) / (10 * 525_336_576) == pytest.approx(0.2505, abs=1e-4)
    # tp 1: F.cross_entropy's backward beside the chunk's bf16 logits, 14 B x 1024 x 128256.
    assert _peak(TORCHTITAN_CHUNKED_LOSS, LLAMA3_8B, tp=1) == 14 * 1024 * 128256 + 134_217_728 == 1_972_895_744
    # No pipeline term: the stage's output is the hidden states, the chunk loop holds the logits.
    assert _peak(TORCHTITAN_CHUNKED_LOSS, LLAMA3_8B, tp=2, pp=4) == 1_316_225_024


def test_torchtitan_03_peaks_at_the_end_where_h_outweighs_a_chunks_vocabulary():
    # Llama-3.1-405B at 8K tokens, tp 8: a chunk's loss 18 x 1024 x 16032 = 295,501,824 < the end's
    # bf16 cast 2 x 8192 x 16384 = 268,435,456 + last logits 2 x 1024 x 16032 = 32,833,536
    # (301,268,992); the fp32 buffer 4 x 8192 x 16384 = 536,870,912 beside either.
    assert _peak(TORCHTITAN_CHUNKED_LOSS, LLAMA31_405B, tp=8) == 536_870_912 + 301_268_992 == 838_139_904


def test_torchtitan_03_copies_the_chunks_at_a_micro_batch_above_one():
    # micro-batch 2 of 4K (8192 tokens): split along the sequence, the chunks are not contiguous and
    # contiguous() copies them, 2 x 8192 x 4096 = 67,108,864 more.
    assert _peak(TORCHTITAN_CHUNKED_LOSS, LLAMA3_8B, tp=2, micro_batch=2) == 1_316_225_024 + 67_108_864


@pytest.mark.parametrize("tp, pp, micro_batch", [(1, 1, 1), (2, 1, 1), (8, 4, 2)])
def test_megatrons_loss_is_six_bytes_a_logit_at_every_degree(tp, pp, micro_batch):
    assert _peak(MEGATRON_LOSS, LLAMA3_8B, tp=tp, pp=pp, micro_batch=micro_batch) == 6 * 8192 * 128256 / tp


@pytest.mark.parametrize("tp, pp", [(1, 1), (2, 1), (1, 4)])
def test_hugging_faces_loss_peaks_in_its_backward_beside_the_held_bf16_logits(tp, pp):
    # ForCausalLMLoss (transformers 4.51.3): forward bf16 logits 2 + fp32 copy 4 + log_softmax's
    # saved output 4 = 10 B; backward the saved output 4 + nll_loss_backward's gradient 4 +
    # _log_softmax_backward_data's 4, beside the bf16 logits the ALST loop keeps in `outputs`, 2:
    # 14 B, the larger. Llama-3-8B at 8K tokens: 14 x 8192 x 128256 = 14,709,424,128 at tp 1.
    assert TORCH_CROSS_ENTROPY_LOSS.logit_bytes == 14
    assert _peak(TORCH_CROSS_ENTROPY_LOSS, LLAMA3_8B, tp=tp, pp=pp) == 14_709_424_128 / tp


@pytest.mark.parametrize("framework", ["deepspeed", "yunchang"])
def test_sp_plans_hugging_face_frameworks_hold_the_loss_backwards_bytes(framework):
    # Llama-3-8B at 8K on 8 H100s, ulysses 8, nothing recomputed: the loss is the peak moment, its
    # logits 14 B x 1024 tokens a rank x 128256 = 1,838,678,016.
    est = evaluate(LLAMA3_8B, load_hardware("h100-sxm"), Workload(seq_len=8192, global_batch=1),
                   ParallelPlan(dp=1, ulysses=8, zero=1, micro_batch=1, recompute="none"), num_nodes=1,
                   gpus_per_node=8, runtime=framework_runtime(framework))
    assert est.memory.logits_bytes == 14 * 1024 * 128256 == 1_838_678_016


@pytest.mark.parametrize("version, logits_bytes", [("0.3", 1_316_225_024), ("0.2", 8_405_385_216)])
def test_sp_plans_torchtitan_plan_holds_its_releases_loss(version, logits_bytes):
    # Llama-3-8B at 8K on 8 H100s, dp 4 x tp 2, nothing recomputed: the loss is the peak moment and
    # its breakdown's logits are the release's (above).
    est = evaluate(LLAMA3_8B, load_hardware("h100-sxm"), Workload(seq_len=8192, global_batch=4),
                   ParallelPlan(dp=4, tp=2, zero=1, micro_batch=1, recompute="none"), num_nodes=1, gpus_per_node=8,
                   runtime=framework_runtime("torchtitan", version))
    assert est.memory.logits_bytes == logits_bytes
