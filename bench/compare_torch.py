#!/usr/bin/env python3
"""Dilatron's forward and backward passes against PyTorch on the same GPU, tensors and stream.

(a) Dense attention (one branch, w = N, r = 1): torch SDPA with the flash and cuDNN backends.
(b) The LongNet configuration as PyTorch users run it today: per branch and head offset, gather the
    selected rows, flash attention with its log-sum-exp, scatter back, and merge the branches by LSE.
With --backward, the same two comparisons for the gradients: Dilatron's backward (given the forward's
O and LSE) against autograd through torch SDPA, and through the PyTorch pipeline of (b). With --torch-op,
forward + backward through dilatron.torch.dilated_attention (python/, autograd and all) against
forward + backward through the pipeline of (b), on the LongNet configuration.

Dilatron is called through its C ABI (ctypes) on the tensors torch allocated. Timings: CUDA events,
warm-up, L2 flushed before every timed run, median of --iters. Prints markdown rows for
bench/RESULTS.md and writes them to --out.
"""
import argparse
import ctypes
import datetime
import math
import os
import subprocess
import sys

import torch
import torch.nn.functional as F

BF16 = 2


class Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("dtype", ctypes.c_int32), ("shape", ctypes.c_int64 * 4),
                ("strides", ctypes.c_int64 * 4)]


def as_tensor(t, dtype_code):
    shape = list(t.shape) + [1] * (4 - t.dim())
    strides = list(t.stride()) + [1] * (4 - t.dim())
    return Tensor(t.data_ptr(), dtype_code, (ctypes.c_int64 * 4)(*shape), (ctypes.c_int64 * 4)(*strides))


class Dilatron:
    def __init__(self, path, segments, dilations, causal):
        self.lib = ctypes.CDLL(path)
        self.lib.dilatron_last_error.restype = ctypes.c_char_p
        n = len(segments)
        handle = ctypes.c_void_p()
        status = self.lib.dilatron_create((ctypes.c_int64 * n)(*segments), (ctypes.c_int64 * n)(*dilations), n, 0,
                                          int(causal), ctypes.c_double(0.0), ctypes.byref(handle))
        self.check(status)
        self.handle = handle

    def check(self, status):
        if status != 0:
            raise RuntimeError(self.lib.dilatron_last_error().decode())

    def __call__(self, q, k, v, out, lse):
        args = [as_tensor(q, BF16), as_tensor(k, BF16), as_tensor(v, BF16), as_tensor(out, BF16), as_tensor(lse, 0)]
        stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
        self.check(self.lib.dilatron_forward(self.handle, *[ctypes.byref(a) for a in args], stream))

    def backward(self, q, k, v, out, lse, dout, dq, dk, dv):
        args = [as_tensor(t, BF16) for t in (q, k, v, out)] + [as_tensor(lse, 0)] + \
               [as_tensor(t, BF16) for t in (dout, dq, dk, dv)]
        stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
        self.check(self.lib.dilatron_backward(self.handle, *[ctypes.byref(a) for a in args], stream))


def grads_of(fn, inputs, dout):
    """Autograd of fn(*inputs) for upstream dout: a callable that reruns only the backward, and its result."""
    leaves = [t.detach().requires_grad_(True) for t in inputs]
    result = fn(*leaves)
    run = lambda: torch.autograd.grad(result, leaves, dout, retain_graph=True)
    return run, run()


def flash_with_lse(q, k, v, causal):
    """q, k, v: [batch, heads, rows, D]. Returns O and natural-log LSE [batch, heads, rows]."""
    out = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, causal)
    return out[0], out[1]


def torch_dilated(q, k, v, segments, dilations, causal):
    """The gather / SDPA / scatter / LSE-merge pipeline. [B, N, H, D] in, O [B, N, H, D] out."""
    B, N, H, D = q.shape
    merged_o = torch.zeros(B, N, H, D, device=q.device, dtype=torch.float32)
    merged_lse = torch.full((B, N, H), -math.inf, device=q.device, dtype=torch.float32)
    for w, r in zip(segments, dilations):
        per = -(-H // r)
        for o in range((H + per - 1) // per):
            heads = slice(o * per, min((o + 1) * per, H))
            segs = N // w
            count = -(-(w - o) // r)
            idx = (torch.arange(segs, device=q.device)[:, None] * w + o +
                   torch.arange(count, device=q.device)[None, :] * r).reshape(-1)

            def gather(t):
                x = t[:, idx, heads]  # [B, segs*count, h, D]
                return x.reshape(B, segs, count, -1, D).permute(0, 1, 3, 2, 4).reshape(B * segs, -1, count, D)

            out, lse = flash_with_lse(gather(q), gather(k), gather(v), causal)
            out = out.reshape(B, segs, -1, count, D).permute(0, 1, 3, 2, 4).reshape(B, segs * count, -1, D)
            lse = lse.reshape(B, segs, -1, count).permute(0, 1, 3, 2).reshape(B, segs * count, -1)
            old_lse = merged_lse[:, idx, heads]
            new_lse = torch.logaddexp(old_lse, lse)
            keep = torch.exp(old_lse - new_lse).nan_to_num(0.0)
            take = torch.exp(lse - new_lse)
            merged_o[:, idx, heads] = merged_o[:, idx, heads] * keep[..., None] + out.float() * take[..., None]
            merged_lse[:, idx, heads] = new_lse
    return merged_o.to(q.dtype)


def timed(fn, iters, warmup):
    flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        flush.zero_()
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    times.sort()
    return times[len(times) // 2]


def peak_bytes(fn):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    free_before = torch.cuda.mem_get_info()[0]
    fn()
    torch.cuda.synchronize()
    driver_side = free_before - torch.cuda.mem_get_info()[0]  # memory Dilatron allocates itself
    return torch.cuda.max_memory_allocated() - base + max(driver_side, 0)


def rel_l2(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def torch_op_row(args, row, config, inputs, segments, dilations, causal):
    """Forward + backward through dilatron.torch against the same through the PyTorch pipeline."""
    os.environ.setdefault("DILATRON_LIBRARY", os.path.abspath(args.lib))
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
    import dilatron.torch as dt

    leaves = [t.detach().requires_grad_(True) for t in inputs]
    dout = torch.randn_like(inputs[0])

    def step(fn):
        def run():
            out = fn(*leaves)
            return (out,) + torch.autograd.grad(out, leaves, dout)
        return run

    op = step(lambda a, b, c: dt.dilated_attention(a, b, c, segments, dilations, causal=causal))
    pipeline = step(lambda a, b, c: torch_dilated(a, b, c, segments, dilations, causal))
    errs = ", ".join(f"{n} {rel_l2(g, w):.2e}" for n, g, w in zip(["o", "dq", "dk", "dv"], op(), pipeline()))
    ms, base = timed(op, args.iters, args.warmup), timed(pipeline, args.iters, args.warmup)
    registered = "custom op" if dt.custom_op_registered else "autograd.Function only"
    row(config, ms, "torch gather-SDPA-scatter-merge, forward + backward", base, f" rel err {errs}; {registered}",
        "torch op")


def source_commit():
    """The commit measured: $DILATRON_COMMIT (bench/device_run.sh sets it from the build it carries, since
    a device machine's copy of the tree has no git history), else git's, else "unknown"."""
    if os.environ.get("DILATRON_COMMIT"):
        return os.environ["DILATRON_COMMIT"]
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", default="build/lib/libdilatron_c.so")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--longnet-len", type=int, default=262144)
    ap.add_argument("--out", default="bench-results.md")
    ap.add_argument("--backward", action="store_true", help="also time the backward passes")
    ap.add_argument("--torch-op", action="store_true",
                    help="also time forward + backward through the PyTorch op (python/dilatron) on LongNet")
    args = ap.parse_args()

    device = torch.cuda.get_device_name()
    commit = source_commit()
    date = datetime.date.today().isoformat()
    rows = []

    def row(config, ms, baseline, baseline_ms, extra="", kind="forward"):
        rows.append(f"| {date} | {device} | {commit} | {kind} | {config} | {ms:.3f} | {baseline} | "
                    f"{baseline_ms:.3f} | {baseline_ms / ms:.2f}x |{extra}")
        print(rows[-1], flush=True)

    H, D = 16, 128
    for N in (8192, 16384, 32768):
        for causal in (False, True):
            q, k, v = (torch.randn(1, N, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
            out = torch.empty_like(q)
            lse = torch.empty(1, H, N, device="cuda", dtype=torch.float32)
            dil = Dilatron(args.lib, [N], [1], causal)
            dil(q, k, v, out, lse)
            config = f"dense N={N} H={H} D={D} bf16 causal={int(causal)}"
            ms = timed(lambda: dil(q, k, v, out, lse), args.iters, args.warmup)
            qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
            from torch.nn.attention import SDPBackend, sdpa_kernel
            for name, backend in (("torch SDPA flash", SDPBackend.FLASH_ATTENTION),
                                  ("torch SDPA cuDNN", SDPBackend.CUDNN_ATTENTION)):
                try:
                    with sdpa_kernel(backend):
                        ref = F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal)
                        err = rel_l2(out, ref.transpose(1, 2))
                        base = timed(lambda: F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal),
                                     args.iters, args.warmup)
                    row(config, ms, name, base, f" rel err {err:.2e}")
                    if args.backward:
                        dout = torch.randn_like(q)
                        dq, dk, dv = (torch.empty_like(t) for t in (q, k, v))
                        dil.backward(q, k, v, out, lse, dout, dq, dk, dv)
                        bwd_ms = timed(lambda: dil.backward(q, k, v, out, lse, dout, dq, dk, dv), args.iters, args.warmup)
                        with sdpa_kernel(backend):
                            run, want = grads_of(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=causal),
                                                 (qt, kt, vt), dout.transpose(1, 2))
                            bwd_base = timed(run, args.iters, args.warmup)
                        errs = ", ".join(f"{n} {rel_l2(g, w.transpose(1, 2)):.2e}" for n, g, w in zip("qkv", (dq, dk, dv), want))
                        row(config, bwd_ms, name + " backward", bwd_base, f" rel err d{errs}", "backward")
                except Exception as e:  # a backend this torch build lacks
                    print(f"{name}: unavailable ({e})", file=sys.stderr)

    segments, dilations = [2048, 4096, 8192, 16384, 32768], [1, 2, 4, 6, 12]
    N = args.longnet_len
    for causal in (False, True):
        q, k, v = (torch.randn(1, N, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        out = torch.empty_like(q)
        lse = torch.empty(1, H, N, device="cuda", dtype=torch.float32)
        dil = Dilatron(args.lib, segments, dilations, causal)
        dil(q, k, v, out, lse)
        ref = torch_dilated(q, k, v, segments, dilations, causal)
        err = rel_l2(out, ref)
        ms = timed(lambda: dil(q, k, v, out, lse), args.iters, args.warmup)
        base = timed(lambda: torch_dilated(q, k, v, segments, dilations, causal), args.iters, args.warmup)
        io = sum(t.numel() * t.element_size() for t in (q, k, v, out, lse))
        mem = peak_bytes(lambda: dil(q, k, v, out, lse))
        torch_mem = peak_bytes(lambda: torch_dilated(q, k, v, segments, dilations, causal))
        config = (f"LongNet w={','.join(map(str, segments))} r={','.join(map(str, dilations))} N={N} H={H} D={D} "
                  f"bf16 causal={int(causal)}")
        row(config, ms, "torch gather-SDPA-scatter-merge", base,
            f" rel err {err:.2e}; extra memory beyond inputs+outputs ({io / 2**20:.0f} MiB): Dilatron "
            f"{mem / 2**20:.1f} MiB, torch {torch_mem / 2**20:.0f} MiB")
        if args.backward:
            dout = torch.randn_like(q)
            dq, dk, dv = (torch.empty_like(t) for t in (q, k, v))
            dil.backward(q, k, v, out, lse, dout, dq, dk, dv)
            bwd_ms = timed(lambda: dil.backward(q, k, v, out, lse, dout, dq, dk, dv), args.iters, args.warmup)
            run, want = grads_of(lambda a, b, c: torch_dilated(a, b, c, segments, dilations, causal), (q, k, v), dout)
            bwd_base = timed(run, args.iters, args.warmup)
            errs = ", ".join(f"{n} {rel_l2(g, w):.2e}" for n, g, w in zip("qkv", (dq, dk, dv), want))
            row(config, bwd_ms, "autograd through torch gather-SDPA-scatter-merge", bwd_base, f" rel err d{errs}",
                "backward")
        if args.torch_op:
            torch_op_row(args, row, config, (q, k, v), segments, dilations, causal)

    with open(args.out, "w") as f:
        f.write("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
