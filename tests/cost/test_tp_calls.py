"""TP collective counts per step (cost.tp_calls) by hand."""

from sp_planner.cost.tp_calls import tp_calls_per_step


def test_tp_without_sequence_parallelism_all_reduces_and_gathers_no_inputs():
    # Megatron's TP alone (Shoeybi et al. 2019): per layer two all-reduces forward and two backward,
    # each a reduce-scatter's and an all-gather's worth; with sequence parallelism the backward also
    # all-gathers the two saved inputs for the weight gradients (6 all-gathers, 4 reduce-scatters).
    # 2 layers, 3 micro-batches, pp 1 (the output layer's forward gather only with SP).
    sp = tp_calls_per_step(layers=2, micro_batches=3, full_recompute=False, pp=1, position_embedding="rope")
    plain = tp_calls_per_step(layers=2, micro_batches=3, full_recompute=False, pp=1, position_embedding="rope",
                              sequence_parallel=False)
    # embedding: 1 AG + 1 RS; output layer: SP 2 AG + 1 RS, without 1 AG + 1 RS. Of the all-gathers,
    # the layers' own (FP8 under per-tensor FP8): 6 a layer with SP, 4 without.
    assert sp == (3 * (2 * 6 + 1 + 2), 3 * (2 * 4 + 1 + 1), 3 * 2 * 6)
    assert plain == (3 * (2 * 4 + 1 + 1), 3 * (2 * 4 + 1 + 1), 3 * 2 * 4)


def test_a_learned_position_table_all_reduces_the_embedding_under_sequence_parallelism():
    # Megatron-Core reduce-scatters the embedding only without a learned position table
    # (language_model_embedding.py at d98e8a64dd lines 51-56); with one it all-reduces (RS + AG
    # worth) and splits forward, all-gathers backward: one all-gather more per micro-batch. Without
    # sequence parallelism the all-reduce is counted as before (1 RS + 1 AG).
    learned = tp_calls_per_step(layers=2, micro_batches=3, full_recompute=False, pp=2,
                                position_embedding="learned_absolute")
    rope = tp_calls_per_step(layers=2, micro_batches=3, full_recompute=False, pp=2, position_embedding="rope")
    # pp 2: the first stage's 2 layers (6 AG + 4 RS each) and the embedding.
    assert rope == (3 * (2 * 6 + 1), 3 * (2 * 4 + 1), 3 * 2 * 6)
    assert learned == (3 * (2 * 6 + 1 + 1), 3 * (2 * 4 + 1), 3 * 2 * 6)
    plain = [tp_calls_per_step(layers=2, micro_batches=3, full_recompute=False, pp=2, position_embedding=kind,
                               sequence_parallel=False) for kind in ("learned_absolute", "rope")]
    assert plain[0] == plain[1] == (3 * (2 * 4 + 1), 3 * (2 * 4 + 1), 3 * 2 * 4)


def test_a_framework_keeping_the_gathered_inputs_gathers_none_again():
    # torchtitan (cost.tp_gathers, regathers_saved_inputs False): a layer's backward gathers only
    # the two output gradients (4 all-gathers, 4 reduce-scatters a layer), the output layer only its
    # forward input (1 AG + 1 RS); 2 layers, 3 micro-batches, pp 1. Without sequence parallelism the
    # inputs are whole and the counts are TP's all-reduces either way.
    kept = tp_calls_per_step(layers=2, micro_batches=3, full_recompute=False, pp=1, position_embedding="rope",
                             regathers=False)
    assert kept == (3 * (2 * 4 + 1 + 1), 3 * (2 * 4 + 1 + 1), 3 * 2 * 4)
    # Full recompute gathers the forward's two inputs again, whatever the backward keeps.
    full = tp_calls_per_step(layers=2, micro_batches=3, full_recompute=True, pp=2, position_embedding="rope",
                             regathers=False)
    assert full == (3 * (2 * 6 + 1), 3 * (2 * 6 + 1), 3 * 2 * 6)
    plain = [tp_calls_per_step(layers=2, micro_batches=3, full_recompute=False, pp=1, position_embedding="rope",
                               sequence_parallel=False, regathers=regathers) for regathers in (True, False)]
    assert plain[0] == plain[1] == (3 * (2 * 4 + 1 + 1), 3 * (2 * 4 + 1 + 1), 3 * 2 * 4)
