#!/usr/bin/env python3
"""How the precision of stage 1's dot products moves InfLLM-V2's block choices (docs/infllm_v2.md).

Stage 1 multiplies every causal (token, head, compressed key) triple twice (the exact normalizer,
then the probabilities); at 128K that is 8.8 TFLOP, which bf16 tensor cores cannot do in 10 ms.
FP8 tensor cores run twice as fast. This script asks what the choices would lose: it runs the
selection of docs/infllm_v2.md ("The algorithm as implemented": mean-pooled keys, exact softmax
per head over the causal kernels, head sum per group, block max, forced first and local blocks,
top-k with ties to the lower block) in f64 on dots taken from q and the compressed keys rounded
to each format (products and sums exact, as an f32 accumulator nearly is), and reports the share
of the f64 reference's choices each keeps (the measure of test_infllm_v2's block_agreement).

    python3 bench/select_precision.py [--T 16384] [--inputs random,structured] [--seed 1]

Needs numpy and ml_dtypes (pip install ml_dtypes). One line of JSON per (inputs, format).
"""
import argparse
import json
import math

import ml_dtypes
import numpy as np

KERNEL, STRIDE, BLOCK, INIT, LOCAL, TOPK = 32, 16, 64, 1, 32, 64
E4M3_MAX, E5M2_MAX = 448.0, 57344.0


def compress(k):
    """k [T, Hkv, D] -> kc [n, Hkv, D]: means of 32 rows every 16."""
    n = (k.shape[0] - KERNEL) // STRIDE + 1
    c = np.cumsum(np.concatenate([np.zeros_like(k[:1]), k]), axis=0)
    starts = np.arange(n) * STRIDE
    return (c[starts + KERNEL] - c[starts]) / KERNEL


def rounded(x, fmt):
    """x rounded to `fmt`, scaled back: 'f64', 'bf16', or e4m3/e5m2 with one scale per row
    (the last axis) or per tensor ('e4m3-tensor'), the scale putting the largest value at the
    format's maximum. ('e4m3-lse' in --formats: only the normalizer's dots in e4m3.)"""
    if fmt == "f64":
        return x
    if fmt == "bf16":
        return x.astype(np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)
    kind, _, scope = fmt.partition("-")
    dtype, top = (ml_dtypes.float8_e4m3fn, E4M3_MAX) if kind == "e4m3" else (
        ml_dtypes.float8_e5m2, E5M2_MAX)
    peak = np.abs(x).max() if scope == "tensor" else np.abs(x).max(axis=-1, keepdims=True)
    scale = top / np.maximum(peak, 1e-30)
    return (x * scale).astype(np.float32).astype(dtype).astype(np.float64) / scale


def select(q, kc, G, norm=None, chunk=1024):
    """Block lists {(t, g): set of blocks} of the selection, from dots of q [T, Hq, D] and kc;
    the softmax's normalizer from those of norm = (q, kc) when given (pass 1 in another format)."""
    T, Hq, D = q.shape
    Hkv, n = kc.shape[1], kc.shape[0]
    nblocks = (T + BLOCK - 1) // BLOCK
    r = BLOCK // STRIDE
    chosen = {}
    for g in range(Hkv):
        for t0 in range(0, T, chunk):
            t = np.arange(t0, min(T, t0 + chunk))
            causal = np.where(t + 1 >= KERNEL, (t + 1 - KERNEL) // STRIDE + 1, 0)
            visible = np.arange(n)[None, :] < causal[:, None]  # [t, i]

            def scores(qx, kcx):  # [t, h, i], -inf past the causal kernels
                x = np.matmul(qx[t, g * G:(g + 1) * G], kcx[:, g].T) / math.sqrt(D)
                return np.where(visible[:, None, :], x, -np.inf)

            s = scores(q, kc)
            sn = s if norm is None else scores(*norm)
            m = np.max(sn, axis=2, keepdims=True)
            m = np.where(np.isfinite(m), m, 0.0)
            lse = m + np.log(np.maximum(np.exp(sn - m).sum(axis=2, keepdims=True), 1e-300))
            p = np.exp(s - lse)
            heads = p.sum(axis=1)  # [t, i]
            # Block j: the max over kernels 4j - 1 .. 4j + 3 that are causal.
            padded = np.full((len(t), r * nblocks + 1), -np.inf)
            padded[:, 1:n + 1] = np.where(visible, heads, -np.inf)
            windows = np.lib.stride_tricks.sliding_window_view(padded, r + 1, axis=1)[:, ::r]
            score = windows[:, :nblocks].max(axis=2)
            own = t // BLOCK
            j = np.arange(nblocks)[None, :]
            forced = (j < INIT) | ((j <= own[:, None]) & (j > own[:, None] - LOCAL))
            score = np.where(forced, np.inf, score)
            score = np.where(j > own[:, None], -np.inf, score)
            for row, tok in enumerate(t):
                count = min(TOPK, own[row] + 1)
                # Descending score, ties to the lower block: a stable sort of -score.
                order = np.argsort(-score[row, :own[row] + 1], kind="stable")
                chosen[(tok, g)] = set(order[:count].tolist())
    return chosen


def make_inputs(kind, T, Hq, Hkv, D, rng):
    if kind == "random":
        return rng.standard_normal((T, Hq, D)), rng.standard_normal((T, Hkv, D))
    # structured: 4 shared key directions, one direction and strength per 64-token stretch;
    # each query head on one direction; plus noise (clear winners, as test_infllm_v2's).
    dirs = rng.standard_normal((4, D))
    k = 0.5 * rng.standard_normal((T, Hkv, D))
    for start in range(0, T, BLOCK):
        for g in range(Hkv):
            k[start:start + BLOCK, g] += rng.uniform(0.5, 3.0) * dirs[rng.integers(4)]
    q = 0.5 * rng.standard_normal((T, Hq, D))
    for h in range(Hq):
        q[:, h] += dirs[rng.integers(4)]
    return q, k


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--T", type=int, default=16384)
    ap.add_argument("--Hq", type=int, default=32)
    ap.add_argument("--Hkv", type=int, default=2)
    ap.add_argument("--D", type=int, default=128)
    ap.add_argument("--inputs", default="random,structured")
    ap.add_argument("--formats", default="bf16,e4m3,e4m3-tensor,e5m2,e4m3-lse")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    G = a.Hq // a.Hkv
    for kind in a.inputs.split(","):
        q, k = make_inputs(kind, a.T, a.Hq, a.Hkv, a.D, rng)
        # The kernels round q and k to bf16 before anything else.
        q, k = rounded(q, "bf16"), rounded(k, "bf16")
        kc = compress(k)
        reference = select(q, kc, G)
        for fmt in a.formats.split(","):
            if fmt.endswith("-lse"):  # the normalizer's dots in FP8, the probabilities' in bf16
                low = fmt[:-len("-lse")]
                got = select(rounded(q, "bf16"), rounded(kc, "bf16"), G,
                             norm=(rounded(q, low), rounded(kc, low)))
            else:
                got = select(rounded(q, fmt), rounded(kc, fmt), G)
            common = sum(len(reference[key] & got[key]) for key in reference)
            total = sum(len(v) for v in reference.values())
            print(json.dumps({"inputs": kind, "T": a.T, "Hq": a.Hq, "Hkv": a.Hkv, "D": a.D,
                              "format": fmt, "agreement": round(common / total, 5)}), flush=True)


if __name__ == "__main__":
    main()
