"""The one memory bound for temporary blocks.

Streamed computations (the delta score's logits, k-means assignments, the float64
conversion of data in `fit`) cut their work into blocks of at most `BLOCK_ELEMENTS`
elements (16 MiB in float32, 32 MiB in float64), so peak memory does not grow with N.
"""

BLOCK_ELEMENTS = 2**22
