"""dilatron.torch.ring_dilated_attention across processes on the CPU (gloo), against the single-process op.

Every test spawns world_size processes (torch.multiprocessing, a file:// rendezvous); each builds the same
full tensors from a seed, runs the ring on its shard and compares its rows of O, LSE and the gradients
with dilated_attention on the full tensors. A worker that fails raises, and spawn re-raises it here with
the worker's traceback. Run by ctest with Debian's python3 and python3-torch (tests/CMakeLists.txt).
"""
import os
import socket
import subprocess
import sys
import tempfile
import unittest

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
import dilatron.torch as dt  # noqa: E402

# Both modes, causal, GQA, partial segments, segments spanning every shard, r larger than a shard.
CASES = [
    dict(shape=(2, 37, 4, 2, 8), segments=[8, 24], dilations=[1, 3], mode="longnet", causal=True),
    dict(shape=(1, 29, 6, 6, 4), segments=[29, 10, 6], dilations=[2, 1, 4], mode="head_groups", causal=False),
    dict(shape=(1, 23, 4, 1, 4), segments=[23], dilations=[5], mode="longnet", causal=False, scale=0.3),
    dict(shape=(2, 18, 4, 2, 2), segments=[6, 18], dilations=[1, 2], mode="head_groups", causal=True),
]


def inputs(shape, seed):
    b, n, h, hkv, d = shape
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, n, heads, d, generator=g, dtype=torch.float64) for heads in (h, hkv, hkv, h)]


def config_of(case):
    return dict(mode=case["mode"], causal=case["causal"], scale=case.get("scale"))


def start(rank, world, path):
    dist.init_process_group("gloo", init_method="file://" + path, rank=rank, world_size=world)


def _then_leave_together(rank, worker, world, path, *args):
    # No rank exits while a peer's gloo threads still talk to it: a process group left to the exit can
    # abort a peer ("terminate called without an active exception").
    worker(rank, world, path, *args)
    dist.barrier()
    dist.destroy_process_group()


def spawn(worker, world, *args, leave_together=True):
    """world processes running worker(rank, world, rendezvous path, *args); leave_together=False for a
    worker that breaks its own process group on purpose (then no barrier can end it)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "rendezvous")
        if leave_together:
            mp.spawn(_then_leave_together, args=(worker, world, path, *args), nprocs=world)
        else:
            mp.spawn(worker, args=(world, path, *args), nprocs=world)


def _equal_to_single_process(rank, world, path):
    start(rank, world, path)
    for i, case in enumerate(CASES):
        q, k, v, dout = inputs(case["shape"], seed=i)
        n = q.shape[1]
        full = [t.clone().requires_grad_() for t in (q, k, v)]
        want, want_lse = dt.dilated_attention(*full, case["segments"], case["dilations"], return_lse=True,
                                              **config_of(case))
        (want * dout).sum().backward()
        begin, end = dt.ring_shard(n, world, rank)
        shard = [t[:, begin:end].clone().requires_grad_() for t in (q, k, v)]
        out, lse = dt.ring_dilated_attention(*shard, case["segments"], case["dilations"], return_lse=True,
                                             **config_of(case))
        (out * dout[:, begin:end]).sum().backward()
        where = f"world {world}, rank {rank}, case {i}"
        torch.testing.assert_close(out, want[:, begin:end], rtol=0, atol=1e-10, msg=where)
        torch.testing.assert_close(lse, want_lse[:, :, begin:end], rtol=0, atol=1e-10, msg=where)
        for name, s, f in zip("qkv", shard, full):
            torch.testing.assert_close(s.grad, f.grad[:, begin:end], rtol=0, atol=1e-10, msg=f"{where}: d{name}")


def _modules_take_a_group(rank, world, path):
    start(rank, world, path)
    torch.manual_seed(0)
    single = dt.MultiheadDilatedAttention(16, 4, [8, 16], [1, 2], causal=True, kv_heads=2, dtype=torch.float64)
    torch.manual_seed(0)
    ring = dt.MultiheadDilatedAttention(16, 4, [8, 16], [1, 2], causal=True, kv_heads=2, dtype=torch.float64,
                                        cp_group=dist.group.WORLD)
    x = torch.randn(2, 30, 16, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    begin, end = dt.ring_shard(30, world, rank)
    want, _ = single(x)
    got, _ = ring(x[:, begin:end])
    torch.testing.assert_close(got, want[:, begin:end], rtol=0, atol=1e-10)
    got.sum().backward()
    want.sum().backward()
    # Each rank's projection gradients cover its rows: summed over the group they are the single one's.
    for a, b in zip(ring.parameters(), single.parameters()):
        total = a.grad.clone()
        dist.all_reduce(total)
        torch.testing.assert_close(total, b.grad, rtol=0, atol=1e-9)


def _gradcheck_through_the_ring(rank, world, path):
    # Every rank holds the same full tensors and gradcheck perturbs the same element on every rank at
    # once. all_reduce / world is the identity whose backward sums the ranks' gradients of their shards;
    # all_gather assembles the full output, whose backward hands each rank its rows' gradient.
    import torch.distributed.nn.functional as dnn
    start(rank, world, path)
    case = CASES[0]
    q, k, v, _ = inputs((1, 12, 2, 1, 4), seed=3)
    begin, end = dt.ring_shard(12, world, rank)

    def whole_output(q, k, v):
        q, k, v = (dnn.all_reduce(t) / world for t in (q, k, v))
        out = dt.ring_dilated_attention(q[:, begin:end], k[:, begin:end], v[:, begin:end], [4, 12], [1, 2],
                                        **config_of(case))
        return torch.cat(dnn.all_gather(out.contiguous()), dim=1)

    assert torch.autograd.gradcheck(whole_output, [t.requires_grad_() for t in (q, k, v)], eps=1e-6, atol=1e-7, rtol=1e-6)


def _compiled_ring(rank, world, path):
    # The ring is no custom op (its shards are checked by a collective first): compile runs it between
    # graphs, with the same result and gradients as eager.
    start(rank, world, path)
    q, k, v, dout = inputs((1, 20, 2, 2, 4), seed=4)
    begin, end = dt.ring_shard(20, world, rank)

    def fn(q, k, v):
        return dt.ring_dilated_attention(q, k, v, [8, 20], [1, 2], causal=True) * 2

    shard = [t[:, begin:end].clone().requires_grad_() for t in (q, k, v)]
    twins = [t.detach().clone().requires_grad_() for t in shard]
    got, want = torch.compile(fn, backend="aot_eager")(*shard), fn(*twins)
    (got * dout[:, begin:end]).sum().backward()
    (want * dout[:, begin:end]).sum().backward()
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    for a, b in zip(shard, twins):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)


def _a_rank_failing_mid_ring(rank, world, path, results):
    # Rank 1's transport fails in its first exchange step: it raises with the transport's message, and the
    # rank waiting for its messages raises within the ring timeout (DILATRON_RING_TIMEOUT_S=3) instead
    # of hanging.
    import time
    from dilatron import _torch_ring
    os.environ["DILATRON_RING_TIMEOUT_S"] = "3"
    start(rank, world, path)
    if rank == 1:
        def cut(self, step, sends, receives):
            raise ConnectionError(f"cable cut before step {step}")
        _torch_ring._GroupTransport.__call__ = cut
    q, k, v, _ = inputs((1, 16, 2, 2, 4), seed=2)
    begin, end = dt.ring_shard(16, world, rank)
    started = time.monotonic()
    try:
        dt.ring_dilated_attention(q[:, begin:end], k[:, begin:end], v[:, begin:end], [16], [1])
        results.put((rank, "(no error)", 0.0))
    except Exception as e:  # noqa: BLE001 - the message is what the test checks
        results.put((rank, f"{type(e).__name__}: {e}", time.monotonic() - started))


def _errors_are_the_same_on_every_rank(rank, world, path, results):
    start(rank, world, path)
    q, k, v, _ = inputs((1, 12, 2, 2, 4), seed=1)
    begin, end = dt.ring_shard(12, world, rank)
    shard = [t[:, begin:end] for t in (q, k, v)]
    messages = []

    def attempt(q, k, v, **kw):
        try:
            dt.ring_dilated_attention(q, k, v, [4], [1], **kw)
            messages.append("(no error)")
        except dt.InvalidArgument as e:
            messages.append(str(e))

    # One rank's head dim differs; one rank holds a row too many; one rank's dtype is bad; the total is
    # not the seq_len given; one rank passes a tensor that is no tensor.
    wide = [torch.zeros(1, end - begin, 2, 8, dtype=torch.float64) for _ in range(3)]
    attempt(*(wide if rank == 1 else shard))
    extra = [torch.cat([t, t[:, :1]], dim=1) for t in shard]
    attempt(*(extra if rank == world - 1 else shard))
    attempt(*([t.to(torch.int32) for t in shard] if rank == world - 1 else shard))
    attempt(*shard, seq_len=13)
    attempt(*shard) if rank else attempt("q", *shard[1:])
    results.put((rank, messages))


class Ring(unittest.TestCase):
    def test_equals_the_single_process_op_for_one_to_four_ranks(self):
        for world in (1, 2, 3, 4):
            with self.subTest(world=world):
                spawn(_equal_to_single_process, world)

    def test_modules_take_a_process_group(self):
        spawn(_modules_take_a_group, 3)

    def test_gradcheck_in_float64_through_the_ring(self):
        spawn(_gradcheck_through_the_ring, 3)

    @unittest.skipUnless(hasattr(torch, "compile"), "torch.compile needs PyTorch 2")
    def test_the_ring_under_torch_compile(self):
        spawn(_compiled_ring, 2)

    def test_a_rank_failing_mid_ring_fails_its_peers_within_the_timeout(self):
        results = mp.get_context("spawn").SimpleQueue()
        spawn(_a_rank_failing_mid_ring, 2, results, leave_together=False)
        got = {rank: (message, seconds) for rank, message, seconds in (results.get() for _ in range(2))}
        self.assertIn("step 1: the transport failed: ConnectionError: cable cut before step 1", got[1][0])
        self.assertIn("DilatronError: step 1: the transport failed", got[0][0])  # not an InvalidArgument
        self.assertLess(got[0][1], 60, "the peer waited for the ring timeout, not forever")

    def test_bad_shards_are_one_error_on_every_rank(self):
        world = 3
        results = mp.get_context("spawn").SimpleQueue()
        spawn(_errors_are_the_same_on_every_rank, world, results)
        got = dict(results.get() for _ in range(world))
        for rank in range(world):
            self.assertEqual(got[rank], got[0], "every rank raises the same message")
        head_dim, rows, dtype, seq_len, not_a_tensor = got[0]
        self.assertIn("the ranks' head_dim differ (rank 0: 4, rank 1: 8, rank 2: 4)", head_dim)
        self.assertIn("rank 0 holds 4 rows, but a sequence of 13 rows over 3 ranks gives it rows [0, 5)", rows)
        self.assertIn("rank 2: InvalidArgument: dtype torch.int32 is not supported", dtype)
        self.assertIn("seq_len=13 but the ranks' shards add up to 12 rows", seq_len)
        self.assertIn("rank 0: TypeError: q must be a torch.Tensor", not_a_tensor)

    def test_without_torch_distributed_it_says_so(self):
        q = torch.zeros(1, 4, 1, 4, dtype=torch.float64)
        with self.assertRaisesRegex(dt.InvalidArgument, "needs torch.distributed initialized"):
            dt.ring_dilated_attention(q, q, q, [4], [1])

    def test_the_torchrun_example_runs_on_the_cpu(self):
        # The variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), set here:
        # Debian's torchrun 1.13 cannot start under Python 3.11 (its Std enum parsing). Under PyTorch 2
        # (the current-PyTorch lane) torchrun itself starts the example too.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        example = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "ring_torchrun.py")
        processes = [subprocess.Popen([sys.executable, example, "--seq-len", "300"], stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True,
                                      env={**os.environ, "RANK": str(r), "WORLD_SIZE": "2", "LOCAL_RANK": str(r),
                                           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
                     for r in range(2)]
        outputs = [p.communicate(timeout=300)[0] for p in processes]
        for rank, (p, out) in enumerate(zip(processes, outputs)):
            self.assertEqual(p.returncode, 0, out)
            self.assertIn(f"rank {rank} of 2: rows [{150 * rank}, {150 * rank + 150}) of 300", out)
            self.assertIn("largest difference from one process", out)
        if int(torch.__version__.split(".")[0]) >= 2:  # and with torchrun itself where it starts
            run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                                  example, "--seq-len", "300"], capture_output=True, text=True, timeout=300)
            self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
            for rank in range(2):
                self.assertIn(f"rank {rank} of 2: rows [{150 * rank}, {150 * rank + 150}) of 300", run.stdout)

    def test_shards_follow_the_library(self):
        self.assertEqual([dt.ring_shard(10, 4, r) for r in range(4)], [(0, 3), (3, 6), (6, 8), (8, 10)])
        with self.assertRaisesRegex(dt.InvalidArgument, "needs 0 <= rank < ranks <= seq_len"):
            dt.ring_shard(3, 4, 0)


if __name__ == "__main__":
    unittest.main()
