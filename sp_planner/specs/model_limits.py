"""Upper bounds on model dimensions, shared by the model specs and the run configs."""

# Upper bounds far above any published model (Llama-3.1-405B: hidden 16,384, 126 layers, 128 heads,
# vocab 128,256; DeepSeek-V3: 256 experts), low enough that every count stays exact in int64 and
# float64 arithmetic: a typo such as hidden_size 1e15 is refused with the range instead of planned.
MAX_WIDTH = 2**20  # hidden, intermediate and expert sizes
MAX_LAYERS = 2**14
MAX_HEADS = 2**14
MAX_HEAD_DIM = 2**12
MAX_VOCAB = 2**24
MAX_EXPERTS = 2**14
