"""dilatron.torch on the CPU (and on a GPU where there is one), against an independent definition.

`dense_reference` below builds dilated attention from docs/SEMANTICS.md with plain torch ops, per row
and head, so autograd through it gives independent gradients. Run by ctest (tests/CMakeLists.txt) with
Debian's python3 and python3-torch; DILATRON_LIBRARY and DILATRON_CLI name the build's library and CLI.
"""
import math
import os
import subprocess
import sys
import tempfile
import unittest

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
import dilatron  # noqa: E402
import dilatron.torch as dt  # noqa: E402


def dense_reference(q, k, v, segments, dilations, mode="longnet", causal=False, scale=None):
    """O [B, N, H, D] and LSE [B, H, N] straight from the definition, differentiable by autograd."""
    b, n, h, d = q.shape
    hkv, g = k.shape[2], len(segments)
    scale = scale or 1.0 / math.sqrt(d)
    group_sizes = [h // g + (1 if i < h % g else 0) for i in range(g)]
    outs, lses = [], []
    for head in range(h):
        kv = head // (h // hkv)
        if mode == "longnet":
            branches = [(i, head // math.ceil(h / dilations[i])) for i in range(g)]
        else:
            group = next(i for i in range(g) if head < sum(group_sizes[:i + 1]))
            branches = [(group, group % dilations[group])]
        rows_out, rows_lse = [], []
        for row in range(n):
            keys = []
            for i, offset in branches:
                w, r = segments[i], dilations[i]
                start = row // w * w
                end = min(start + w, n)
                if row - start >= offset and (row - start - offset) % r == 0:
                    keys += [key for key in range(start + offset, end, r) if not causal or key <= row]
            if not keys:
                rows_out.append(q.new_zeros(b, d))
                rows_lse.append(q.new_full((b,), -math.inf))
                continue
            scores = torch.einsum("bd,bkd->bk", q[:, row, head], k[:, keys, kv]) * scale
            lse = torch.logsumexp(scores, dim=1)
            rows_out.append(torch.einsum("bk,bkd->bd", torch.exp(scores - lse[:, None]), v[:, keys, kv]))
            rows_lse.append(lse)
        outs.append(torch.stack(rows_out, dim=1))
        lses.append(torch.stack(rows_lse, dim=1))
    out = torch.stack(outs, dim=2)
    return (out / g if mode == "head_groups" else out), torch.stack(lses, dim=1)


# Small configurations: both modes, causal, GQA, partial segments, r not dividing w, rows no branch selects.
CASES = [
    dict(shape=(1, 13, 4, 2, 4), segments=[4, 13], dilations=[1, 3], mode="longnet", causal=False),
    dict(shape=(2, 11, 4, 4, 3), segments=[5, 8], dilations=[2, 3], mode="longnet", causal=True),
    dict(shape=(1, 10, 3, 1, 4), segments=[4, 10, 6], dilations=[1, 2, 4], mode="head_groups", causal=False),
    dict(shape=(1, 9, 4, 2, 2), segments=[9, 4], dilations=[3, 1], mode="head_groups", causal=True),
]


def random_inputs(shape, dtype=torch.float64, seed=0):
    b, n, h, hkv, d = shape
    gen = torch.Generator().manual_seed(seed)
    make = lambda heads: torch.randn(b, n, heads, d, generator=gen, dtype=torch.float64).to(dtype)
    return make(h), make(hkv), make(hkv)


class DenseReference(unittest.TestCase):
    def test_worked_example_of_semantics(self):
        # docs/SEMANTICS.md: head 0, row 6 attends rows 4-7 in branch 0 and rows 0, 3, 6 in branch 1.
        q = torch.zeros(1, 10, 4, 1, dtype=torch.float64)
        k = torch.zeros(1, 10, 2, 1, dtype=torch.float64)
        v = torch.arange(10, dtype=torch.float64).view(1, 10, 1, 1).expand(1, 10, 2, 1).clone()
        out, lse = dense_reference(q, k, v, [4, 8], [1, 3])
        self.assertAlmostEqual(out[0, 6, 0, 0].item(), (4 + 5 + 6 + 7 + 0 + 3 + 6) / 7)
        self.assertAlmostEqual(lse[0, 0, 6].item(), math.log(7))


class Forward(unittest.TestCase):
    def test_matches_the_definition(self):
        for case in CASES:
            with self.subTest(**case):
                q, k, v = random_inputs(case["shape"])
                out, lse = dt.dilated_attention(q, k, v, case["segments"], case["dilations"], case["mode"],
                                                case["causal"], return_lse=True)
                want_out, want_lse = dense_reference(q, k, v, case["segments"], case["dilations"], case["mode"],
                                                     case["causal"])
                torch.testing.assert_close(out, want_out, rtol=1e-12, atol=1e-12)
                torch.testing.assert_close(lse, want_lse.float(), rtol=1e-6, atol=1e-6)
                self.assertEqual(lse.dtype, torch.float32)
                self.assertFalse(lse.requires_grad)

    def test_custom_scale_and_strided_inputs(self):
        q, k, v = random_inputs((1, 12, 2, 2, 4), seed=1)
        qt = q.transpose(1, 2).contiguous().transpose(1, 2)  # same values, non-contiguous strides
        self.assertFalse(qt.is_contiguous())
        out = dt.dilated_attention(qt, k, v, [6, 12], [1, 2], scale=0.3)
        torch.testing.assert_close(out, dense_reference(q, k, v, [6, 12], [1, 2], scale=0.3)[0])

    def test_every_host_dtype(self):
        q, k, v = random_inputs((1, 16, 2, 1, 8), seed=2)
        want = dense_reference(q, k, v, [8, 16], [1, 2])[0]
        for dtype, tolerance in ((torch.float32, 1e-6), (torch.float16, 2e-3), (torch.bfloat16, 1e-2)):
            with self.subTest(dtype=dtype):
                out = dt.dilated_attention(q.to(dtype), k.to(dtype), v.to(dtype), [8, 16], [1, 2])
                self.assertEqual(out.dtype, dtype)
                torch.testing.assert_close(out.double(), want, rtol=tolerance, atol=tolerance)

    def test_equals_the_cli_on_the_same_files(self):
        cli = os.environ.get("DILATRON_CLI")
        if not cli:
            self.skipTest("DILATRON_CLI is not set (ctest sets it)")
        import numpy as np
        q, k, v = (t.float() for t in random_inputs((2, 20, 4, 2, 8), seed=3))
        with tempfile.TemporaryDirectory() as d:
            for name, t in (("q", q), ("k", k), ("v", v)):
                np.save(os.path.join(d, f"{name}.npy"), t.numpy())
            subprocess.run([cli, "run", "--q", f"{d}/q.npy", "--k", f"{d}/k.npy", "--v", f"{d}/v.npy", "--out",
                            f"{d}/o.npy", "--lse", f"{d}/lse.npy", "--segments", "8,20", "--dilations", "1,3",
                            "--causal", "--device", "cpu", "--quiet"], check=True)
            out, lse = dt.dilated_attention(q, k, v, [8, 20], [1, 3], causal=True, return_lse=True)
            self.assertTrue(torch.equal(out, torch.from_numpy(np.load(f"{d}/o.npy"))))
            self.assertTrue(torch.equal(lse, torch.from_numpy(np.load(f"{d}/lse.npy"))))


class Backward(unittest.TestCase):
    def test_gradcheck_in_float64(self):
        for case in CASES:
            with self.subTest(**case):
                q, k, v = (t.requires_grad_() for t in random_inputs(case["shape"], seed=4))
                fn = lambda q, k, v: dt.dilated_attention(q, k, v, case["segments"], case["dilations"], case["mode"],
                                                          case["causal"])
                self.assertTrue(torch.autograd.gradcheck(fn, (q, k, v), eps=1e-6, atol=1e-7, rtol=1e-5))

    def test_gradients_equal_autograd_through_the_definition(self):
        for case in CASES:
            with self.subTest(**case):
                inputs = random_inputs(case["shape"], seed=5)
                dout = torch.randn(inputs[0].shape, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
                args = (case["segments"], case["dilations"], case["mode"], case["causal"])
                leaves = [t.clone().requires_grad_() for t in inputs]
                got = torch.autograd.grad(dt.dilated_attention(*leaves, *args), leaves, dout)
                ref_leaves = [t.clone().requires_grad_() for t in inputs]
                want = torch.autograd.grad(dense_reference(*ref_leaves, *args)[0], ref_leaves, dout)
                for name, a, b in zip("qkv", got, want):
                    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=f"d{name}")

    def test_a_second_derivative_is_an_error_not_a_silent_zero(self):
        q, k, v = (t.requires_grad_() for t in random_inputs((1, 8, 2, 1, 4), seed=8))
        out = dt.dilated_attention(q, k, v, [4, 8], [1, 2])
        with self.assertRaisesRegex(RuntimeError, "differentiable once"):
            torch.autograd.grad(out.square().sum(), q, create_graph=True)
        out = dt.dilated_attention(q, k, v, [4, 8], [1, 2])
        with self.assertRaisesRegex(RuntimeError, "differentiable once"):
            torch.autograd.grad(out, q, torch.ones_like(out), create_graph=True)
        (dq,) = torch.autograd.grad(dt.dilated_attention(q, k, v, [4, 8], [1, 2]).sum(), q)
        self.assertIsNone(dq.grad_fn)  # first derivatives as before
        with self.assertRaisesRegex(RuntimeError, "differentiable once"):
            torch.autograd.gradgradcheck(lambda q: dt.dilated_attention(q, k.detach(), v.detach(), [4, 8], [1, 2]),
                                         (q,))

    def test_expanded_upstream_gradient(self):
        # out.sum().backward() hands the op an expanded (stride 0) gradient.
        q, k, v = (t.requires_grad_() for t in random_inputs((1, 8, 2, 1, 4), seed=7))
        dt.dilated_attention(q, k, v, [4, 8], [1, 2]).sum().backward()
        ref = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        dense_reference(*ref, [4, 8], [1, 2])[0].sum().backward()
        for a, b in zip((q, k, v), ref):
            torch.testing.assert_close(a.grad, b.grad)


class Modules(unittest.TestCase):
    def test_dilated_attention_module(self):
        m = dt.DilatedAttention([4, 8], [1, 2], causal=True)
        q, k, v = random_inputs((1, 8, 2, 2, 4), seed=8)
        torch.testing.assert_close(m(q, k, v), dense_reference(q, k, v, [4, 8], [1, 2], causal=True)[0])
        torch.testing.assert_close(m(q, k, v, is_causal=False), dense_reference(q, k, v, [4, 8], [1, 2])[0])
        self.assertIn("segments=[4, 8]", repr(m))

    def test_multihead_wrapper_shapes_and_gradients(self):
        torch.manual_seed(0)
        m = dt.MultiheadDilatedAttention(32, 4, [8, 16], [1, 2], kv_heads=2, layer_norm=True, dtype=torch.float64)
        self.assertEqual(m.k_proj.out_features, 16)
        x = torch.randn(2, 16, 32, dtype=torch.float64, requires_grad=True)
        out, weights = m(x)
        self.assertEqual(out.shape, (2, 16, 32))
        self.assertIsNone(weights)
        out.square().mean().backward()
        for name, p in m.named_parameters():
            self.assertIsNotNone(p.grad, name)
            self.assertTrue(torch.isfinite(p.grad).all(), name)
        # Against the projections composed by hand over the definition.
        q = m.q_proj(x).view(2, 16, 4, 8)
        k = m.k_proj(x).view(2, 16, 2, 8)
        v = m.v_proj(x).view(2, 16, 2, 8)
        want = m.out_proj(m.norm(dense_reference(q, k, v, [8, 16], [1, 2])[0].reshape(2, 16, 32)))
        torch.testing.assert_close(out, want)

    def test_multihead_rejects_bad_shapes(self):
        with self.assertRaisesRegex(ValueError, "multiple of num_heads"):
            dt.MultiheadDilatedAttention(30, 4, [8], [1])
        with self.assertRaisesRegex(ValueError, "multiple of kv_heads"):
            dt.MultiheadDilatedAttention(32, 4, [8], [1], kv_heads=3)
        m = dt.MultiheadDilatedAttention(32, 4, [8], [1])
        with self.assertRaisesRegex(dilatron.InvalidArgument, r"expected \[B, N, 32\]"):
            m(torch.randn(2, 8, 16))

    def test_presets(self):
        names = dt.list_presets()
        self.assertIn("longnet", names)
        self.assertEqual(dt.preset("longnet"), {"segments": [2048, 4096, 8192, 16384, 32768],
                                                "dilations": [1, 2, 4, 6, 12], "mode": "longnet"})
        self.assertEqual(dt.preset("longnet-head-groups")["mode"], "head_groups")
        with self.assertRaisesRegex(ValueError, "unknown preset 'nope'"):
            dt.preset("nope")
        q, k, v = random_inputs((1, 40, 5, 5, 4), seed=9)
        torch.testing.assert_close(dt.dilated_attention(q, k, v, **dt.preset("longnet-head-groups")),
                                   dense_reference(q, k, v, **dt.preset("longnet-head-groups"))[0])


class BadInputs(unittest.TestCase):
    def setUp(self):
        self.q, self.k, self.v = random_inputs((1, 8, 4, 2, 4), dtype=torch.float32)

    def expect(self, message, *args, **kwargs):
        with self.assertRaisesRegex(dilatron.InvalidArgument, message):
            dt.dilated_attention(*args, **kwargs)

    def test_python_checks(self):
        q, k, v = self.q, self.k, self.v
        self.expect("expected 4 dims", q[0], k, v, [8], [1])
        self.expect("must share B, N and D", q[:, :4], k, v, [8], [1])
        self.expect("must be a multiple", torch.zeros(1, 8, 3, 4), k, v, [8], [1])
        self.expect("must have one shape", q, k, v[:, :, :1], [8], [1])
        self.expect("must share a dtype", q, k.double(), v, [8], [1])
        self.expect("of one length", q, k, v, [8, 4], [1])
        self.expect("positive finite", q, k, v, [8], [1], scale=-1.0)
        self.expect("mode 'dense'", q, k, v, [8], [1], mode="dense")
        with self.assertRaisesRegex(TypeError, "torch.Tensor"):
            dt.dilated_attention(q.numpy(), k, v, [8], [1])

    def test_lengths_are_integers_as_given(self):
        q, k, v = self.q, self.k, self.v
        self.expect(r"segments\[0\] = 18446744073709551620: out of range", q, k, v, [2**64 + 4], [1])
        self.expect(r"dilations\[1\] = -9223372036854775809: out of range", q, k, v, [8, 8], [1, -2**63 - 1])
        self.expect(r"segments\[0\] = 8.5: expected an integer", q, k, v, [8.5], [1])
        self.expect(r"dilations\[0\] = True: expected an integer", q, k, v, [8], [True])
        with self.assertRaisesRegex(dilatron.InvalidArgument, "out of range"):
            dt.DilatedAttention([2**64 + 8], [1])

    def test_library_handles_stay_bounded(self):
        for i in range(100):
            dt.dilated_attention(self.q, self.k, self.v, [8], [1], scale=1.0 + i / 128)
        self.assertLessEqual(dt._attention.cache_info().currsize, 64)

    def test_library_messages_surface(self):
        with self.assertRaises(dilatron.InvalidArgument) as e:
            dt.dilated_attention(self.q, self.k, self.v, [8], [0])
        self.assertIn("dilation", str(e.exception))
        self.assertEqual(e.exception.status, 1)
        self.expect("head_groups", self.q, self.k, self.v, [2] * 5, [1] * 5, mode="head_groups")
        with self.assertRaisesRegex(dilatron.InvalidArgument, "int64|int32|dtype"):
            dt.dilated_attention(self.q.int(), self.k.int(), self.v.int(), [8], [1])


class MissingLibrary(unittest.TestCase):
    def test_names_every_place_tried(self):
        code = ("import dilatron.torch as dt, torch\n"
                "try:\n    dt.dilated_attention(*(torch.zeros(1, 4, 1, 8),) * 3, [4], [1])\n"
                "except dilatron.DilatronError as e:\n    print('ERROR', e)\n")
        env = dict(os.environ, DILATRON_LIBRARY="/nonexistent/libdilatron_c.so",
                   PYTHONPATH=os.path.join(os.path.dirname(__file__), "..", "..", "python"))
        result = subprocess.run([sys.executable, "-c", "import dilatron\n" + code], env=env, capture_output=True,
                                text=True, check=True)
        self.assertIn("ERROR cannot load Dilatron's C library", result.stdout)
        self.assertIn("/nonexistent/libdilatron_c.so", result.stdout)


@unittest.skipUnless(dt.custom_op_registered, "this PyTorch has no torch.library.custom_op (2.4+)")
class CustomOp(unittest.TestCase):
    def test_registered_and_traced_by_compile(self):
        self.assertTrue(hasattr(torch.ops.dilatron, "forward"))
        q, k, v = random_inputs((1, 8, 2, 2, 4), dtype=torch.float32, seed=10)
        fn = lambda q, k, v: dt.dilated_attention(q, k, v, [4, 8], [1, 2]) * 2
        compiled = torch.compile(fn, backend="eager", fullgraph=True)
        torch.testing.assert_close(compiled(q, k, v), fn(q, k, v))
        torch.library.opcheck(torch.ops.dilatron.forward.default, (q, k, v, [4, 8], [1, 2], "longnet", False, 0.0))

    def test_opcheck_of_the_backward_op(self):
        q, k, v = random_inputs((1, 9, 4, 2, 4), dtype=torch.float32, seed=12)
        args = ([4, 9], [1, 3], "head_groups", True, 0.0)
        out, lse = torch.ops.dilatron.forward(q, k, v, *args)
        torch.library.opcheck(torch.ops.dilatron.backward.default, (q, k, v, out, lse, torch.randn_like(out), *args))

    def test_compiled_forward_and_backward_equal_eager_with_no_graph_break(self):
        # aot_eager traces forward and backward through the fake implementations; inductor also generates
        # code around the op (a C++ compiler on the CPU). dynamic=True: one graph for several lengths.
        def fn(q, k, v):
            return (dt.dilated_attention(q, k, v, [4, 8], [1, 2], causal=True) * q.shape[1]).square().sum()

        explained = torch._dynamo.explain(fn)(*random_inputs((1, 8, 2, 2, 4), dtype=torch.float32, seed=13))
        self.assertEqual(explained.graph_break_count, 0, explained)
        for backend in ("aot_eager", "inductor"):
            torch._dynamo.reset()
            compiled = torch.compile(fn, backend=backend, dynamic=True, fullgraph=True)
            for n in (8, 12, 20):
                with self.subTest(backend=backend, n=n):
                    leaves = [t.requires_grad_() for t in random_inputs((2, n, 2, 1, 4), dtype=torch.float32, seed=n)]
                    twins = [t.detach().clone().requires_grad_() for t in leaves]
                    got, want = compiled(*leaves), fn(*twins)
                    got.backward()
                    want.backward()
                    torch.testing.assert_close(got, want)
                    for a, b in zip(leaves, twins):
                        torch.testing.assert_close(a.grad, b.grad)


@unittest.skipUnless(torch.cuda.is_available(), "no GPU")
class Gpu(unittest.TestCase):
    def run_case(self, dtype, causal):
        torch.manual_seed(11)
        make = lambda heads: torch.randn(2, 300, heads, 64, dtype=dtype, device="cuda")
        q, k, v = make(4), make(2), make(2)
        dout = torch.randn_like(q)
        args = ([64, 128, 300], [1, 3, 5], "longnet", causal)
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        out = dt.dilated_attention(*leaves, *args)
        grads = torch.autograd.grad(out, leaves, dout)
        cpu_leaves = [t.detach().cpu().double().requires_grad_() for t in (q, k, v)]
        want = dt.dilated_attention(*cpu_leaves, *args)
        want_grads = torch.autograd.grad(want, cpu_leaves, dout.cpu().double())
        bound = 2e-2 if dtype == torch.bfloat16 else 5e-3
        relative = lambda a, b: ((a.double().cpu() - b).norm() / b.norm()).item()
        self.assertLess(relative(out, want), bound)
        for name, a, b in zip("qkv", grads, want_grads):
            self.assertLess(relative(a, b), bound, f"d{name}")

    def test_cuda_matches_the_cpu_path(self):
        for dtype in (torch.float16, torch.bfloat16):
            for causal in (False, True):
                with self.subTest(dtype=dtype, causal=causal):
                    self.run_case(dtype, causal)

    def test_runs_on_a_non_default_stream(self):
        # The side stream is kept busy before its inputs are written: an op queued anywhere but the
        # current stream would read them unwritten.
        source = torch.randn(1, 256, 2, 64, dtype=torch.float16, device="cuda")
        want = dt.dilated_attention(source, source, source, [64, 256], [1, 4])
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            q = torch.zeros_like(source)
            torch.cuda._sleep(100_000_000)
            q.copy_(source)
            leaf = q.clone().requires_grad_()
            got = dt.dilated_attention(leaf, q, q, [64, 256], [1, 4])
            (grad,) = torch.autograd.grad(got, [leaf], torch.ones_like(got))
        torch.cuda.current_stream().wait_stream(stream)
        self.assertTrue(torch.equal(got, want))
        reference = source.clone().requires_grad_()
        (want_grad,) = torch.autograd.grad(dt.dilated_attention(reference, source, source, [64, 256], [1, 4]),
                                           [reference], torch.ones_like(want))
        # dQ sums key tiles with atomics, so the order (and the last bit) may differ between runs.
        torch.testing.assert_close(grad, want_grad, rtol=2e-3, atol=2e-3)

    def test_non_contiguous_rows_are_refused(self):
        q = torch.randn(1, 64, 2, 128, dtype=torch.float16, device="cuda")[..., ::2]
        with self.assertRaisesRegex(dilatron.InvalidArgument, "contiguous"):
            dt.dilated_attention(q, q, q, [64], [1])


if __name__ == "__main__":
    unittest.main()
