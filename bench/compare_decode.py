#!/usr/bin/env python3
"""Generation: tokens per second of one dilated attention layer decoding after N cached tokens, on one GPU.

(a) Dilatron's DilatedKVCache on the GPU (python/dilatron, the decode kernels): the cache holds only
    each branch's current segment, so a token reads the same bytes at any N.
(b) Dense attention over the whole K/V cache: torch SDPA with one query row, reading all N rows.
(c) The whole history re-gathered every step, as torchscale's incremental decoding does: per branch,
    the history padded to whole segments, every segment's selected rows gathered (O(N) per token), the
    new row attending its own segment's, the branches merged by LSE.
Timings: CUDA events, warm-up, the L2 flushed before every timed step (a model's other layers evict
the cache between a layer's tokens), median of --iters. The cache is filled first by decoding a random
prompt of N rows (its time is printed, not compared). Prints markdown rows for
bench/RESULTS.md and writes them to --out.
"""
import argparse
import datetime
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import dilatron.torch as dt  # noqa: E402
from compare_torch import source_commit, timed  # noqa: E402  (this folder, the script's, is on the path)

WARMUP = 3

SEGMENTS, DILATIONS = [2048, 4096, 8192, 16384, 32768], [1, 2, 4, 6, 12]  # LongNet's base model


def regathered_step(q, k_hist, v_hist, n, heads, kv_heads):
    """One token at position n - 1 through the whole history (torchscale's way): per branch and head offset,
    every segment's selected rows gathered (O(N) per token), the new row attending its own segment's, and
    the branches merged by LSE. Returns O [B, H, D] in float32."""
    b, _, _, d = k_hist.shape
    group = heads // kv_heads
    k_all = k_hist[:, :n].repeat_interleave(group, dim=2) if group > 1 else k_hist[:, :n]
    v_all = v_hist[:, :n].repeat_interleave(group, dim=2) if group > 1 else v_hist[:, :n]
    out = torch.zeros(b, heads, d, device=q.device)
    lse_total = torch.full((b, heads), -math.inf, device=q.device)
    for w, r in zip(SEGMENTS, DILATIONS):
        padded = math.ceil(n / w) * w
        k = F.pad(k_all, (0, 0, 0, 0, 0, padded - n)).view(b, padded // w, w, heads, d)
        v = F.pad(v_all, (0, 0, 0, 0, 0, padded - n)).view(b, padded // w, w, heads, d)
        last, local = (n - 1) // w, (n - 1) % w
        for o in range(r):
            hs = [h for h in range(heads) if h // math.ceil(heads / r) == o]
            if not hs or local < o or (local - o) % r:
                continue
            index = torch.tensor(hs, device=q.device)
            ks = k[:, :, o::r].index_select(3, index)  # every segment's selected rows: O(N)
            vs = v[:, :, o::r].index_select(3, index)
            count = (local - o) // r + 1
            key, value = ks[:, last, :count].float(), vs[:, last, :count].float()  # [b, count, |hs|, d]
            score = torch.einsum("bhd,bkhd->bhk", q[:, 0].index_select(1, index).float(), key) / math.sqrt(d)
            lse = torch.logsumexp(score, -1)
            o_branch = torch.einsum("bhk,bkhd->bhd", torch.softmax(score, -1), value)
            merged = torch.logaddexp(lse_total[:, index], lse)
            out[:, index] = (out[:, index] * torch.exp(lse_total[:, index] - merged)[..., None] +
                             o_branch * torch.exp(lse - merged)[..., None])
            lse_total[:, index] = merged
    return out


def measure(n, a, dev, dtype):
    """The table's row for N = n cached tokens; every tensor it makes is freed when it returns."""
    b, h, hkv, d = a.batch, a.heads, a.kv_heads, a.head_dim
    torch.manual_seed(n)
    cache = dt.DilatedKVCache(SEGMENTS, DILATIONS, batch=b, kv_heads=hkv, head_dim=d, dtype=dtype, device=dev,
                              num_heads=h)
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    chunk = a.chunk or n
    for at in range(0, n, chunk):
        m = min(chunk, n - at)
        cache.decode(torch.randn(b, m, h, d, device=dev, dtype=dtype), torch.randn(b, m, hkv, d, device=dev, dtype=dtype),
                     torch.randn(b, m, hkv, d, device=dev, dtype=dtype))
    stop.record()
    stop.synchronize()
    fill_s = start.elapsed_time(stop) / 1e3
    q = torch.randn(b, 1, h, d, device=dev, dtype=dtype)
    k1, v1 = torch.randn(b, 1, hkv, d, device=dev, dtype=dtype), torch.randn(b, 1, hkv, d, device=dev, dtype=dtype)
    ours = timed(lambda: cache.decode(q, k1, v1), a.iters, WARMUP)
    cache_mib = cache.nbytes / 2**20

    k_hist = torch.randn(b, n, hkv, d, device=dev, dtype=dtype)
    v_hist = torch.randn(b, n, hkv, d, device=dev, dtype=dtype)
    # SDPA's layout [B, H, N, D], kv heads repeated for the query heads as torch does for GQA.
    k_dense = k_hist.transpose(1, 2).repeat_interleave(h // hkv, dim=1)
    v_dense = v_hist.transpose(1, 2).repeat_interleave(h // hkv, dim=1)
    dense = timed(lambda: F.scaled_dot_product_attention(q.transpose(1, 2), k_dense, v_dense), a.iters, WARMUP)
    regather = timed(lambda: regathered_step(q, k_hist, v_hist, n, h, hkv), max(3, a.iters // 4), WARMUP)
    tps = lambda ms: b / (ms / 1e3)  # noqa: E731
    return (f"| {n} | {ours:.3f} / {tps(ours):.0f} | {dense:.3f} / {tps(dense):.0f} | {regather:.2f} / "
            f"{tps(regather):.0f} | {cache_mib:.1f} MiB | {fill_s:.1f} |")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--context", type=int, nargs="+", default=[32768, 1048576], help="cached tokens N")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=16)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--chunk", type=int, default=0,
                   help="prompt rows per decode call when filling the cache (0: the whole prompt in one call, which "
                        "runs on the forward's tensor-core kernels; later chunks run on the decode kernels)")
    p.add_argument("--out", default="decode_results.md")
    a = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("compare_decode.py needs a CUDA GPU")
    dev, dtype = torch.device("cuda"), torch.bfloat16
    commit = source_commit()
    rows = [f"\n### Decoding, {datetime.date.today()}, {torch.cuda.get_device_name()}, commit {commit}\n",
            f"LongNet preset, B={a.batch} H={a.heads} Hkv={a.kv_heads} D={a.head_dim} bf16, one layer, one token "
            f"per step, median of {a.iters} (L2 flushed)\n",
            "| cached tokens N | Dilatron cache (ms / tokens/s) | dense SDPA over N (ms / tokens/s) | "
            "history re-gathered (ms / tokens/s) | cache bytes | prompt fill (s) |",
            "| --- | --- | --- | --- | --- | --- |"]
    for n in a.context:
        row = measure(n, a, dev, dtype)
        print(row, flush=True)
        rows.append(row)
        torch.cuda.empty_cache()
    with open(a.out, "w") as f:
        f.write("\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
