#!/usr/bin/env python3
"""How far the emulated device can be from the GPU: the same small cases through `dilatron run` on
--device cuda, --device emulator and --device cpu (the float64 reference), and the largest absolute
difference of every output between each pair.

The emulator's arithmetic differs from the tensor cores' in summation order and in ex2's precision
(docs/EMULATOR.md), so GPU and emulator agree to rounding, not bit for bit: the cuda-emulator column
bounds what a kernel test on the emulator cannot see. Prints a markdown table and writes it to --out;
exits 1 when a case fails to run or the GPU is further from the reference than --tolerance.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

OUTPUTS = ("out", "lse", "dq", "dk", "dv")

# name, [B, N, H, Hkv, D], dtype, run flags
CASES = [
    ("fwd+bwd f16 D128", [2, 768, 4, 4, 128], np.float16, "--segments 128,256 --dilations 1,2"),
    ("fwd+bwd bf16 D64 causal GQA", [1, 1024, 4, 2, 64], np.float32, "--segments 256,512 --dilations 1,2 --causal"),
    ("fwd+bwd bf16 D96 head_groups", [1, 512, 4, 4, 96], np.float32,
     "--segments 128,512 --dilations 2,4 --mode head_groups"),
    ("packed fwd+bwd bf16 D64 causal", [1, 1024, 2, 2, 64], np.float32,
     "--segments 128,256 --dilations 1,2 --causal --cu-seqlens {dir}/cu.npy"),
    ("ring P=2 fwd+bwd bf16 D64", [1, 1024, 2, 2, 64], np.float32, "--segments 256,1024 --dilations 1,4 --ranks 2"),
]


def run_case(cli, dir, flags, device):
    outs = {name: f"{dir}/{device}_{name}.npy" for name in OUTPUTS}
    command = (f"'{cli}' run --q {dir}/q.npy --k {dir}/k.npy --v {dir}/v.npy {flags.format(dir=dir)} --device {device} "
               f"--out {outs['out']} --lse {outs['lse']} --backward --dout {dir}/do.npy --dq {outs['dq']} "
               f"--dk {outs['dk']} --dv {outs['dv']} --quiet")
    done = subprocess.run(command, shell=True, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"--device {device}: {done.stderr.strip()}")
    return {name: np.load(path).astype(np.float64) for name, path in outs.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cli", default=os.environ.get("DILATRON_CLI", "build/bin/dilatron"))
    p.add_argument("--devices", default="cuda,emulator", help="the two devices compared (cpu is the reference)")
    p.add_argument("--tolerance", type=float, default=0.05, help="largest |device - cpu| accepted")
    p.add_argument("--out", default="agreement.md")
    args = p.parse_args()
    first, second = args.devices.split(",")
    rng = np.random.default_rng(2026)
    lines = [f"| case | output | max abs {first} - {second} | max abs {first} - cpu | max abs {second} - cpu |",
             "| --- | --- | --- | --- | --- |"]
    print("\n".join(lines), flush=True)
    failed = False
    for name, shape, dtype, flags in CASES:
        b, n, h, hkv, d = shape
        with tempfile.TemporaryDirectory() as dir:
            for tensor, heads in (("q", h), ("k", hkv), ("v", hkv), ("do", h)):
                np.save(f"{dir}/{tensor}.npy", rng.standard_normal((b, n, heads, d)).astype(dtype))
            np.save(f"{dir}/cu.npy", np.array([0, 300, 301, 700, n], dtype=np.int32))
            try:
                got = {device: run_case(args.cli, dir, flags, device)
                       for device in (first, second, "cpu")}
            except RuntimeError as e:
                print(f"{name}: {e}", file=sys.stderr)
                lines.append(f"| {name} | - | FAILED | | |")
                print(lines[-1], flush=True)
                failed = True
                continue
        for output in OUTPUTS:
            a, e, ref = (got[device][output] for device in (first, second, "cpu"))
            finite = np.isfinite(ref)  # LSE of a row with no key is -inf on every device
            diff = lambda x, y: float(np.max(np.abs(np.where(finite, x - y, 0.0)), initial=0.0))
            same_inf = bool(np.array_equal(np.isfinite(a), finite) and np.array_equal(np.isfinite(e), finite))
            to_ref = diff(a, ref)
            failed |= not same_inf or to_ref > args.tolerance
            lines.append(f"| {name} | {output} | {diff(a, e):.3e} | {to_ref:.3e} | {diff(e, ref):.3e} |"
                         + ("" if same_inf else " non-finite values differ |"))
        print("\n".join(lines[-len(OUTPUTS):]), flush=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
