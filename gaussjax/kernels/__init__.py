"""Fused Pallas kernels behind the models' `implementation="pallas"`: the online-softmax weighted sum.

`softmax_weighted_sum(queries, keys, bias, scale, values=None)` computes
`sum_j softmax_j(s_i (q_i . k_j + c_j)) v_j` for queries `(B, K)`, keys `(N, K)`, biases `(N,)`,
values `(N, F)` and inverse temperatures `s` without forming the `(B, N)` logits, with one
lowering per platform (Pallas Triton on GPUs, Pallas Mosaic on TPUs, interpreted on CPU) and
derivatives in the queries and `s`. `DeltaMixture` and `PatchMixture` (LS and ELS) use it when
their `implementation` is `"pallas"` (opt-in: `"auto"` keeps the XLA path until the kernel is
measured faster on a platform; docs/kernels.md).
"""

from gaussjax.kernels._online import DOT_PRECISION
from gaussjax.kernels._selection import IMPLEMENTATIONS
from gaussjax.kernels._weighted_sum import WeightedSum, softmax_weighted_sum

__all__ = ["DOT_PRECISION", "IMPLEMENTATIONS", "WeightedSum", "softmax_weighted_sum"]
