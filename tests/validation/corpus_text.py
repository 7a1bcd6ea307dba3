"""A small corpus file's text for tests: one source, the defaults every row shares, then rows."""

SOURCE_AND_DEFAULTS = """\
source: {id: src, title: t, where: w, url: "https://x", read_from: r, setup: s}
defaults: {model: Llama-2-7B, hardware: A800, num_nodes: 1, gpus_per_node: 8, pp: 1, zero: 1,
           recompute: none, micro_batch: 1, precision: bf16, framework: Megatron-LM,
           figure: model_tflops_per_gpu, convention: megatron_full_square, seq_len: 65536,
           global_batch: 1, ring: 1, dp: 1}
rows:
"""
# One row: USP Table 5's first, tp 4 x ulysses 2 at 64K.
FIRST_ROW = "  - {id: a, table: T5 r1, tp: 4, ulysses: 2, measured: 260.2}\n"
