"""The cost of an additive per-key bias (AttentionParams::key_bias) through smyrf_torch: dense
and SMYRF 8 x 32 at B = 1, H = 4, N = 4096, d = 64, 2 threads, forward and forward + backward,
with and without key_bias; medians of 7 calls after one warm-up.

    PYTHONPATH=build/torch/python python3 tools/key_bias_cost.py
"""
import statistics
import time

import torch

import smyrf_torch


def median_ms(f, reps=7):
    f()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main():
    torch.manual_seed(0)
    b, h, n, d = 1, 4, 4096, 64
    q, k, v = (torch.randn(b, h, n, d) for _ in range(3))
    bias = torch.randn(b, h, n)
    for method, kw in [("dense", {}),
                       ("smyrf/lsh", dict(n_hashes=8, q_cluster_size=32, k_cluster_size=32))]:
        def forward(**extra):
            smyrf_torch.attention(q, k, v, method, num_threads=2, **kw, **extra)

        qg, kg, vg = (x.clone().requires_grad_() for x in (q, k, v))

        def train(**extra):
            o = smyrf_torch.attention(qg, kg, vg, method, num_threads=2, **kw, **extra)
            o.backward(torch.ones_like(o))

        for what, f in (("forward", forward), ("forward+backward", train)):
            plain, biased = median_ms(f), median_ms(lambda: f(key_bias=bias))
            print(f"{method:10s} {what:17s} {plain:8.2f} ms   with key_bias {biased:8.2f} ms "
                  f"({biased / plain:.3f}x)")


if __name__ == "__main__":
    main()
