"""dilatron.torch.DilatedKVCache and MultiheadDilatedAttention's kv_cache= on the CPU: decoding after a
prompt, token by token and in chunks, equals the last rows of the causal definition (test_torch_op's
dense_reference) over everything so far; rows at their own positions, forks, resets and rewinds stay
exact; the cache's bytes stay flat; bad calls are errors that change nothing.
"""
import os
import sys
import unittest

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
import dilatron  # noqa: E402
import dilatron.torch as dt  # noqa: E402
from test_torch_op import dense_reference  # noqa: E402

CONFIGS = [
    dict(segments=[4, 8, 16], dilations=[1, 2, 4], mode="longnet", heads=(4, 2)),
    dict(segments=[5, 7], dilations=[2, 3], mode="longnet", heads=(3, 3)),
    dict(segments=[6, 4, 9], dilations=[1, 5, 2], mode="head_groups", heads=(3, 1)),
]


def sequences(batch, n, heads, d=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    make = lambda h: torch.randn(batch, n, h, d, generator=gen, dtype=torch.float64)
    return make(heads[0]), make(heads[1]), make(heads[1])


def cache_for(c, batch, d=4, **kwargs):
    return dt.DilatedKVCache(c["segments"], c["dilations"], batch=batch, kv_heads=c["heads"][1], head_dim=d,
                             dtype=torch.float64, mode=c["mode"], num_heads=c["heads"][0], **kwargs)


class Decode(unittest.TestCase):
    def check_chunks(self, chunks, total=40):
        for i, c in enumerate(CONFIGS):
            with self.subTest(config=i, chunks=chunks):
                q, k, v = sequences(2, total, c["heads"], seed=i)
                want, want_lse = dense_reference(q, k, v, c["segments"], c["dilations"], c["mode"], causal=True)
                cache = cache_for(c, 2)
                at, step = 0, 0
                while at < total:
                    n = min(chunks[step % len(chunks)], total - at)
                    rows = slice(at, at + n)
                    out, lse = cache.decode(q[:, rows], k[:, rows], v[:, rows], return_lse=True)
                    torch.testing.assert_close(out, want[:, rows], rtol=1e-10, atol=1e-10)
                    torch.testing.assert_close(lse, want_lse[:, :, rows].float())
                    at, step = at + n, step + 1
                self.assertEqual(cache.positions, [total, total])

    def test_token_by_token_after_a_prompt(self):
        self.check_chunks([11, 1])

    def test_chunks_of_several_sizes(self):
        self.check_chunks([3, 1, 9, 2, 17])

    def test_rows_at_their_own_positions_fork_reset_and_rewind(self):
        c = CONFIGS[0]
        q, k, v = sequences(2, 30, c["heads"], seed=7)
        cache = cache_for(c, 2)
        cache.decode(q[:, :10], k[:, :10], v[:, :10])
        cache.reset(1)  # row 1 starts again: it decodes rows 0..4 of sequence 1 while row 0 goes on
        rows0, rows1 = slice(10, 15), slice(0, 5)
        out = cache.decode(torch.stack([q[0, rows0], q[1, rows1]]), torch.stack([k[0, rows0], k[1, rows1]]),
                           torch.stack([v[0, rows0], v[1, rows1]]))
        want0, _ = dense_reference(q[:1, :15], k[:1, :15], v[:1, :15], c["segments"], c["dilations"], causal=True)
        want1, _ = dense_reference(q[1:, :5], k[1:, :5], v[1:, :5], c["segments"], c["dilations"], causal=True)
        torch.testing.assert_close(out[0], want0[0, 10:15])
        torch.testing.assert_close(out[1], want1[0])
        self.assertEqual(cache.positions, [15, 5])
        cache.fork(0, 1)  # row 1 continues row 0's sequence with its own next rows
        out = cache.decode(q[:, 15:18], k[:, 15:18], v[:, 15:18])
        for b in range(2):
            history = [t[:1, :15] for t in (q, k, v)]
            mine = [torch.cat([h, t[b:b + 1, 15:18]], 1) for h, t in zip(history, (q, k, v))]
            want, _ = dense_reference(*mine, c["segments"], c["dilations"], causal=True)
            torch.testing.assert_close(out[b], want[0, 15:18])
        cache.rewind(0, 17)  # all three branches' segments began at 16
        self.assertEqual(cache.positions, [17, 18])
        with self.assertRaisesRegex(dilatron.InvalidArgument, "needs rows before 16"):
            cache.rewind(1, 15)

    def test_bytes_stay_flat(self):
        c = CONFIGS[0]
        cache = cache_for(c, 3, d=8)
        before = cache.nbytes
        self.assertGreater(before, 0)
        q, k, v = sequences(3, 100, c["heads"], d=8, seed=3)
        for at in range(0, 100, 20):
            cache.decode(q[:, at:at + 20], k[:, at:at + 20], v[:, at:at + 20])
            self.assertEqual(cache.nbytes, before)

    def test_bad_calls_change_nothing(self):
        c = CONFIGS[0]
        cache = cache_for(c, 2, max_positions=12)
        q, k, v = sequences(2, 20, c["heads"], seed=4)
        cache.decode(q[:, :10], k[:, :10], v[:, :10])
        bad = [
            ((q[:, 10:13], k[:, 10:13], v[:, 10:13]), "3 more rows pass the cache's 12 positions"),
            ((q[:, 10:11].float(), k[:, 10:11].float(), v[:, 10:11].float()), "q, k and v are f32 but the cache holds f64"),
            ((q[:, 10:11, :2], k[:, 10:11], v[:, 10:11]), "heads"),
            ((q[:1, 10:11], k[:1, 10:11], v[:1, 10:11]), "the batch"),
            ((q[:, 10], k[:, 10], v[:, 10]), "expected 4 dims"),
        ]
        for args, message in bad:
            with self.subTest(message=message):
                with self.assertRaisesRegex(dilatron.InvalidArgument, message):
                    cache.decode(*args)
                self.assertEqual(cache.positions, [10, 10])
        with self.assertRaisesRegex(dilatron.InvalidArgument, "expected a CPU or CUDA device"):
            dt.DilatedKVCache([4], [1], batch=1, kv_heads=1, head_dim=4, device="meta")
        out = cache.decode(q[:, 10:12], k[:, 10:12], v[:, 10:12])  # still exact after the refusals
        want, _ = dense_reference(q[:, :12], k[:, :12], v[:, :12], c["segments"], c["dilations"], causal=True)
        torch.testing.assert_close(out, want[:, 10:12])


class MultiheadGeneration(unittest.TestCase):
    def test_incremental_decoding_equals_the_whole_sequence(self):
        torch.manual_seed(0)
        layer = dt.MultiheadDilatedAttention(32, 4, [8, 16], [1, 2], causal=True, kv_heads=2, dtype=torch.float64)
        x = torch.randn(2, 23, 32, dtype=torch.float64)
        with torch.no_grad():
            whole, _ = layer(x)
            cache = layer.new_kv_cache(batch=2)
            pieces = [layer(x[:, :9], kv_cache=cache)[0]] + [layer(x[:, t:t + 1], kv_cache=cache)[0]
                                                             for t in range(9, 23)]
        torch.testing.assert_close(torch.cat(pieces, 1), whole)
        self.assertEqual(cache.positions, [23, 23])

    def test_refusals(self):
        layer = dt.MultiheadDilatedAttention(16, 2, [4], [1], causal=False, dtype=torch.float64)
        with self.assertRaisesRegex(dilatron.InvalidArgument, "generation needs a causal layer"):
            layer.new_kv_cache(1)
        causal = dt.MultiheadDilatedAttention(16, 2, [4], [1], causal=True, dtype=torch.float64)
        cache = causal.new_kv_cache(1)
        with self.assertRaisesRegex(dilatron.InvalidArgument, "kv_cache decodes causally"):
            causal(torch.randn(1, 3, 16, dtype=torch.float64), is_causal=False, kv_cache=cache)


@unittest.skipUnless(torch.cuda.is_available(), "no GPU")
class DecodeGpu(unittest.TestCase):
    def test_cuda_cache_equals_the_cpu_cache(self):
        c = CONFIGS[0]
        for dtype in (torch.float16, torch.bfloat16):
            with self.subTest(dtype=dtype):
                q, k, v = (t.to(dtype) for t in sequences(2, 90, c["heads"], d=64, seed=8))
                gpu = dt.DilatedKVCache(c["segments"], c["dilations"], batch=2, kv_heads=c["heads"][1], head_dim=64,
                                        dtype=dtype, device="cuda", mode=c["mode"], num_heads=c["heads"][0])
                cpu = cache_for(c, 2, d=64)
                for at, n in ((0, 37), (37, 1), (38, 1), (39, 51)):
                    rows = slice(at, at + n)
                    got = gpu.decode(*(t[:, rows].cuda() for t in (q, k, v)))
                    want = cpu.decode(*(t[:, rows].double() for t in (q, k, v)))
                    torch.testing.assert_close(got.double().cpu(), want, rtol=3e-2, atol=3e-2)
                self.assertEqual(gpu.positions, [90, 90])
                with self.assertRaisesRegex(dilatron.InvalidArgument, "is on cpu but the cache on cuda"):
                    gpu.decode(q[:, :1], k[:, :1], v[:, :1])


if __name__ == "__main__":
    unittest.main()
