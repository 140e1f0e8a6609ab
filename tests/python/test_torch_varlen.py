"""dilatron.torch's packed batches (dilated_attention_varlen, cu_seqlens= of the modules) on the CPU, and
on a GPU where there is one: every packed sequence equals the independent definition (test_torch_op's
dense_reference) run on that sequence alone, forward, LSE and gradients; bad offsets are clear errors.
"""
import os
import sys
import unittest

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
import dilatron  # noqa: E402
import dilatron.torch as dt  # noqa: E402
from test_torch_op import dense_reference  # noqa: E402

# Sequences of 1 row, fewer rows than the smallest segment, an empty one, and more than the largest.
LENGTHS = [1, 3, 0, 13, 6]
CONFIGS = [
    dict(heads=(4, 2), segments=[4, 8], dilations=[1, 3], mode="longnet", causal=False),
    dict(heads=(4, 4), segments=[5, 8], dilations=[2, 3], mode="longnet", causal=True),
    dict(heads=(3, 1), segments=[4, 10, 6], dilations=[1, 2, 4], mode="head_groups", causal=True),
]


def offsets(lengths, device="cpu"):
    cu = [0]
    for n in lengths:
        cu.append(cu[-1] + n)
    return torch.tensor(cu, dtype=torch.int32, device=device)


def packed_inputs(lengths, heads, d=4, dtype=torch.float64, seed=0, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    make = lambda h: torch.randn(total, h, d, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)
    return make(heads[0]), make(heads[1]), make(heads[1])


def config_args(c):
    return dict(mode=c["mode"], causal=c["causal"])


class VarlenForward(unittest.TestCase):
    def test_every_sequence_equals_the_definition_on_it_alone(self):
        cu = offsets(LENGTHS)
        for i, c in enumerate(CONFIGS):
            with self.subTest(config=i):
                q, k, v = packed_inputs(LENGTHS, c["heads"], seed=i)
                out, lse = dt.dilated_attention_varlen(q, k, v, cu, c["segments"], c["dilations"], return_lse=True,
                                                       **config_args(c))
                self.assertEqual(out.shape, q.shape)
                self.assertEqual(lse.shape, (c["heads"][0], q.shape[0]))
                for begin, end in zip(cu[:-1].tolist(), cu[1:].tolist()):
                    if begin == end:
                        continue
                    rows = slice(begin, end)
                    want, want_lse = dense_reference(q[None, rows], k[None, rows], v[None, rows], c["segments"],
                                                     c["dilations"], c["mode"], c["causal"])
                    torch.testing.assert_close(out[rows], want[0], rtol=1e-10, atol=1e-10)
                    torch.testing.assert_close(lse[:, rows], want_lse[0].float())  # LSE is float32

    def test_max_seqlen_changes_nothing(self):
        cu, c = offsets(LENGTHS), CONFIGS[0]
        q, k, v = packed_inputs(LENGTHS, c["heads"], seed=5)
        base = dt.dilated_attention_varlen(q, k, v, cu, c["segments"], c["dilations"])
        for max_seqlen in (max(LENGTHS), q.shape[0]):
            torch.testing.assert_close(
                dt.dilated_attention_varlen(q, k, v, cu, c["segments"], c["dilations"], max_seqlen=max_seqlen), base)


class VarlenBackward(unittest.TestCase):
    def test_gradients_equal_autograd_through_the_definition_per_sequence(self):
        cu = offsets(LENGTHS)
        for i, c in enumerate(CONFIGS):
            with self.subTest(config=i):
                leaves = [t.requires_grad_() for t in packed_inputs(LENGTHS, c["heads"], seed=10 + i)]
                dout = torch.randn_like(leaves[0])
                out = dt.dilated_attention_varlen(*leaves, cu, c["segments"], c["dilations"], **config_args(c))
                out.backward(dout)
                twins = [t.detach().clone().requires_grad_() for t in leaves]
                for begin, end in zip(cu[:-1].tolist(), cu[1:].tolist()):
                    if begin == end:
                        continue
                    rows = slice(begin, end)
                    want, _ = dense_reference(*(t[None, rows] for t in twins), c["segments"], c["dilations"],
                                              c["mode"], c["causal"])
                    want.backward(dout[None, rows])
                for got, want in zip(leaves, twins):
                    torch.testing.assert_close(got.grad, want.grad, rtol=1e-9, atol=1e-10)

    def test_gradcheck(self):
        lengths = [3, 1, 7]
        q, k, v = (t.requires_grad_() for t in packed_inputs(lengths, (2, 1), d=3, seed=21))
        cu = offsets(lengths)
        self.assertTrue(torch.autograd.gradcheck(
            lambda q, k, v: dt.dilated_attention_varlen(q, k, v, cu, [4, 5], [1, 2], causal=True), (q, k, v)))


class VarlenModules(unittest.TestCase):
    def test_dilated_attention_module_takes_cu_seqlens(self):
        c, cu = CONFIGS[1], offsets(LENGTHS)
        q, k, v = packed_inputs(LENGTHS, c["heads"], seed=30)
        layer = dt.DilatedAttention(c["segments"], c["dilations"], c["mode"], c["causal"])
        got = layer(q, k, v, cu_seqlens=cu, max_seqlen=max(LENGTHS))
        for begin, end in zip(cu[:-1].tolist(), cu[1:].tolist()):
            if begin < end:
                torch.testing.assert_close(got[begin:end], layer(*(t[None, begin:end] for t in (q, k, v)))[0])
        with self.assertRaisesRegex(dilatron.InvalidArgument, "max_seqlen goes with cu_seqlens"):
            layer(q[None], k[None], v[None], max_seqlen=4)
        ring = dt.DilatedAttention(c["segments"], c["dilations"], cp_group=object())
        with self.assertRaisesRegex(dilatron.InvalidArgument, "ring does not split packed batches"):
            ring(q, k, v, cu_seqlens=cu)

    def test_multihead_packed_rows_equal_each_sequence_alone(self):
        torch.manual_seed(31)
        model = dt.MultiheadDilatedAttention(16, 4, [4, 8], [1, 2], causal=True, kv_heads=2, dtype=torch.float64)
        cu = offsets(LENGTHS)
        x = torch.randn(1, cu[-1].item(), 16, dtype=torch.float64, requires_grad=True)
        out, weights = model(x, cu_seqlens=cu)
        self.assertIsNone(weights)
        self.assertEqual(out.shape, x.shape)
        flat, _ = model(x[0], cu_seqlens=cu)
        torch.testing.assert_close(flat, out[0])
        for begin, end in zip(cu[:-1].tolist(), cu[1:].tolist()):
            if begin < end:
                torch.testing.assert_close(out[:, begin:end], model(x[:, begin:end])[0])
        out.square().sum().backward()
        self.assertTrue(all(p.grad is not None for p in model.parameters()))
        with self.assertRaisesRegex(dilatron.InvalidArgument, r"a packed batch is \[1, total, 16\]"):
            model(torch.randn(2, 5, 16, dtype=torch.float64), cu_seqlens=offsets([5]))


class VarlenBadInputs(unittest.TestCase):
    def setUp(self):
        self.q, self.k, self.v = packed_inputs([4, 6], (2, 2), seed=40)

    def call(self, cu, **kwargs):
        return dt.dilated_attention_varlen(self.q, self.k, self.v, cu, [4], [1], **kwargs)

    def test_offsets_are_checked_with_a_clear_message(self):
        bad = [
            (torch.tensor([0, 4, 10]), "dtype torch.int64: expected torch.int32"),
            (torch.tensor([[0, 4, 10]], dtype=torch.int32), r"shape \(1, 3\)"),
            (torch.tensor([0], dtype=torch.int32), r"shape \(1,\)"),
            (torch.tensor([0, 6, 4, 10], dtype=torch.int32), r"cu_seqlens\[2\] = 4 is below cu_seqlens\[1\] = 6"),
            (torch.tensor([0, 4, 9], dtype=torch.int32), "ends at 9 but the packed tensors hold 10 rows"),
            (torch.tensor([-1, 4, 10], dtype=torch.int32), r"cu_seqlens\[0\] = -1"),
            (torch.tensor([0, 4, 10], dtype=torch.int32, device="meta"), "cu_seqlens is on meta but q on cpu"),
            ([0, 4, 10], "cu_seqlens must be a torch.Tensor"),
        ]
        for cu, message in bad:
            with self.subTest(message=message):
                with self.assertRaisesRegex((dilatron.InvalidArgument, TypeError), message):
                    self.call(cu)

    def test_shapes_and_max_seqlen(self):
        cu = offsets([4, 6])
        with self.assertRaisesRegex(dilatron.InvalidArgument, r"a packed batch is \[total, heads, D\]"):
            dt.dilated_attention_varlen(self.q[None], self.k[None], self.v[None], cu, [4], [1])
        with self.assertRaisesRegex(dilatron.InvalidArgument, "max_seqlen = 5 is below the longest sequence, 6 rows"):
            self.call(cu, max_seqlen=5)
        with self.assertRaisesRegex(dilatron.InvalidArgument, r"max_seqlen = 11 is outside \[0, 10\]"):
            self.call(cu, max_seqlen=11)
        with self.assertRaisesRegex(dilatron.InvalidArgument, "must share B, N and D"):
            dt.dilated_attention_varlen(self.q, self.k[:9], self.v[:9], cu, [4], [1])


@unittest.skipUnless(dt.custom_op_registered, "this PyTorch has no torch.library.custom_op")
class VarlenCustomOp(unittest.TestCase):
    def test_compiled_forward_and_backward_equal_eager(self):
        cu = offsets([3, 9, 4])

        def fn(q, k, v):
            return dt.dilated_attention_varlen(q, k, v, cu, [4, 8], [1, 2], causal=True).square().sum()

        leaves = [t.requires_grad_() for t in packed_inputs([3, 9, 4], (2, 1), dtype=torch.float32, seed=50)]
        twins = [t.detach().clone().requires_grad_() for t in leaves]
        compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
        got, want = compiled(*leaves), fn(*twins)
        got.backward()
        want.backward()
        torch.testing.assert_close(got, want)
        for a, b in zip(leaves, twins):
            torch.testing.assert_close(a.grad, b.grad)

    def test_opcheck(self):
        cu = offsets([5, 2])
        q, k, v = packed_inputs([5, 2], (2, 2), dtype=torch.float32, seed=51)
        args = ([4, 7], [1, 2], "longnet", True, 0.0, 0)
        torch.library.opcheck(torch.ops.dilatron.forward_varlen.default, (q, k, v, cu, *args, True))
        out, lse = torch.ops.dilatron.forward_varlen(q, k, v, cu, *args, True)
        torch.library.opcheck(torch.ops.dilatron.backward_varlen.default,
                              (q, k, v, out, lse, torch.randn_like(out), cu, *args))


@unittest.skipUnless(torch.cuda.is_available(), "no GPU")
class VarlenGpu(unittest.TestCase):
    def test_cuda_matches_the_cpu_path(self):
        lengths = [1, 200, 0, 37, 300]
        for dtype in (torch.float16, torch.bfloat16):
            with self.subTest(dtype=dtype):
                cpu = [t.to(dtype) for t in packed_inputs(lengths, (4, 2), d=64, dtype=torch.float32, seed=60)]
                gpu = [t.cuda().requires_grad_() for t in cpu]
                cpu = [t.double().requires_grad_() for t in cpu]
                cu = offsets(lengths)
                args = ([64, 128], [1, 3])
                dout = torch.randn(gpu[0].shape, dtype=dtype)
                got = dt.dilated_attention_varlen(*gpu, cu.cuda(), *args, causal=True, max_seqlen=max(lengths))
                want = dt.dilated_attention_varlen(*cpu, cu, *args, causal=True)
                got.backward(dout.cuda())
                want.backward(dout.double())
                tolerance = dict(rtol=3e-2, atol=3e-2)
                torch.testing.assert_close(got.double().cpu(), want, **tolerance)
                for a, b in zip(gpu, cpu):
                    torch.testing.assert_close(a.grad.double().cpu(), b.grad, **tolerance)
                unchecked = dt.dilated_attention_varlen(*(t.detach() for t in gpu), cu.cuda(), *args, causal=True,
                                                        check_offsets=False)
                torch.testing.assert_close(unchecked, got.detach())

    def test_offsets_on_another_device_are_refused(self):
        q, k, v = (t.cuda().half() for t in packed_inputs([4, 6], (2, 2), d=64, seed=61))
        with self.assertRaisesRegex(dilatron.InvalidArgument, "cu_seqlens is on cpu but q on cuda"):
            dt.dilated_attention_varlen(q, k, v, offsets([4, 6]), [4], [1])


if __name__ == "__main__":
    unittest.main()
