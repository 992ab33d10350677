"""The sparse benchmarks' ids (tools/benchmark_ops.py on CPU, tools/benchmark_gpu.py on a GPU):
drawn with replacement, uniformly or from a Zipf law as ids in click logs are. NumPy only."""

import numpy as np


def id_sampler(rng, num_rows, zipf_exponent=0.0):
    """A function n -> n int32 ids in [0, num_rows), drawn with replacement: uniformly when
    zipf_exponent is 0, else the row of popularity rank k with probability proportional to
    k ** -zipf_exponent. The ranks are scattered over the table once, so the same rows stay hot
    from one draw to the next, as the same ids do from one training step to the next."""
    if zipf_exponent == 0:
        return lambda n: rng.integers(0, num_rows, size=n).astype(np.int32)
    weights = np.arange(1, num_rows + 1, dtype=np.float64) ** -zipf_exponent
    cumulative = np.cumsum(weights / weights.sum())
    rows_by_rank = rng.permutation(num_rows).astype(np.int32)

    def draw(n):
        ranks = np.searchsorted(cumulative, rng.random(n), side="right")
        return rows_by_rank[np.minimum(ranks, num_rows - 1)]
    return draw


def zipf_exponents(zipf_exponent):
    """The id distributions a sparse benchmark runs: uniform (exponent 0), then Zipf unless 0."""
    return [0.0] + ([zipf_exponent] if zipf_exponent else [])


def distribution_name(zipf_exponent):
    return f"zipf {zipf_exponent:g}" if zipf_exponent else "uniform"
