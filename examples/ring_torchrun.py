"""One sequence split across the processes torchrun starts, through dilatron.torch's ring.

    torchrun --standalone --nproc_per_node 2 examples/ring_torchrun.py            # CPU: gloo
    torchrun --standalone --nproc_per_node 8 examples/ring_torchrun.py --cuda     # one GPU per rank: NCCL

Every rank builds the same layer and the same input (a fixed seed), keeps its shard of the rows
(dilatron.torch.ring_shard), runs forward and backward across the ranks, and checks its rows against the
layer run on the whole sequence in this one process (on the CPU, where that fits; skipped with --cuda).
"""
import argparse
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import dilatron.torch as dt  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cuda", action="store_true", help="one GPU per rank (LOCAL_RANK), NCCL; default: CPU, gloo")
    parser.add_argument("--seq-len", type=int, default=1000)
    args = parser.parse_args()

    dist.init_process_group("nccl" if args.cuda else "gloo")  # rank and world size from torchrun's variables
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if args.cuda else torch.device("cpu")
    dtype = torch.bfloat16 if args.cuda else torch.float64
    if args.cuda:
        torch.cuda.set_device(device)

    torch.manual_seed(0)  # the same layer and input on every rank
    layer = dt.MultiheadDilatedAttention(256, 4, segments=[128, 256, 512], dilations=[1, 2, 4], causal=True,
                                         device=device, dtype=dtype, cp_group=dist.group.WORLD)
    x = torch.randn(1, args.seq_len, 256, device=device, dtype=dtype)
    begin, end = dt.ring_shard(args.seq_len, world, rank)
    out, _ = layer(x[:, begin:end])
    out.float().square().mean().backward()
    line = f"rank {rank} of {world}: rows [{begin}, {end}) of {args.seq_len}, output {tuple(out.shape)}"

    if not args.cuda:  # the same layer over the whole sequence in this process
        layer.attention.cp_group = None
        whole, _ = layer(x)
        error = (out - whole[:, begin:end]).abs().max().item()
        line += f", largest difference from one process {error:.1e}"
        if error > 1e-10:
            raise SystemExit(line + ": too large")
    print(line, flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
