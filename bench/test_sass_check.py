#!/usr/bin/env python3
"""Unit tests of bench/sass_check.py's analysis on small SASS listings written the way `nvdisasm -c`
prints them (NVRTC 13 CUBINs, sm_80 and sm_90a): the parser, the loop finder, the main-loop rule, the
.ptxas reader and the occupancy model. No GPU, no disassembler, no dilatron binary needed."""

import sys
import unittest
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
import sass_check as sc  # noqa: E402

HEADER = """\t.target\tsm_90a

\t.elftype\t@"ET_EXEC"


//--------------------- .text._Z6kernelv --------------------------
\t.section\t.text._Z6kernelv,"ax",@progbits
\t.align\t128
.text._Z6kernelv:
        .type           _Z6kernelv,@function
_Z6kernelv:
"""

FOOTER = """
//--------------------- SYMBOLS --------------------------

\t.type\t\t.nv.reservedSmem.offset0,@object
"""


def listing(*lines):
    """A one-function listing: `L name` is a label, anything else an instruction at the next address."""
    out, address = [HEADER], 0
    for line in lines:
        if line.startswith("L "):
            out.append(f"{line[2:]}:\n")
        else:
            out.append(f"        /*{address:04x}*/                   {line} ;\n")
            address += 0x10
    return "".join(out) + FOOTER


def body(n, op="IMAD R0, R1, R2, R0"):
    return [op] * n


def loops_of(text):
    (section,) = sc.parse_sass(text)
    return sc.find_loops(section)


class ParseSass(unittest.TestCase):
    def test_reads_addresses_opcodes_predicates_and_branch_targets(self):
        text = HEADER + """        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0010*/              @!P0 BRA `(.L_x_0) ;
        /*0020*/                   HMMA.16816.F32.BF16 R104, R108.reuse, R112, R104 ;
.L_x_0:
.L_x_9:
        /*0030*/               @P1 LDSM.16.MT88.4 R8, [R9+UR4+0x800] ;
        /*0040*/                   CALL.REL.NOINC `($__internal_0_$__cuda_sm20_div_s64) ;
        /*0050*/                   EXIT ;
""" + FOOTER
        (section,) = sc.parse_sass(text)
        self.assertEqual(section.name, ".text._Z6kernelv")
        self.assertEqual([i.address for i in section.instructions], [0, 0x10, 0x20, 0x30, 0x40, 0x50])
        self.assertEqual([i.base for i in section.instructions], ["LDC", "BRA", "HMMA", "LDSM", "CALL", "EXIT"])
        self.assertEqual(section.instructions[2].opcode, "HMMA.16816.F32.BF16")
        self.assertEqual(section.instructions[1].target, ".L_x_0")
        self.assertEqual(section.labels, {".text._Z6kernelv": 0, "_Z6kernelv": 0, ".L_x_0": 0x30, ".L_x_9": 0x30})

    def test_ignores_data_sections_and_reads_listings_with_encodings(self):
        text = """\t.section\t.nv.info._Z6kernelv,"",@"SHT_CUDA_INFO"
        /*0044*/ \t.dword\t_Z6kernelv
\t.section\t.text._Z6kernelv,"ax",@progbits
        /*0000*/                   MOV R1, c[0x0][0x28] ;                        /* 0x00000a0000017a02 */
                                                                                 /* 0x000fe40000000f00 */
        /*0010*/                   STL [R1], R2 ;                                /* 0x0000000201007387 */
"""
        (section,) = sc.parse_sass(text)
        self.assertEqual([i.base for i in section.instructions], ["MOV", "STL"])


class FindLoops(unittest.TestCase):
    def test_forward_branches_are_not_loops(self):
        self.assertEqual(loops_of(listing("@P0 BRA `(.L_x_1)", *body(3), "L .L_x_1", "EXIT")), [])

    def test_a_backward_branch_is_a_loop_from_its_label_to_the_branch(self):
        text = listing(*body(2), "L .L_x_3", "LDSM.16.M88.4 R8, [R8]", "HMMA.16816.F32.BF16 R0, R8, R10, R0",
                       "HMMA.16816.F32.BF16 R4, R8, R12, R4", "@P0 BRA `(.L_x_3)", "EXIT")
        (loop,) = loops_of(text)
        self.assertEqual((loop.header, loop.start, loop.end), (".L_x_3", 0x20, 0x50))
        self.assertEqual((loop.instructions, loop.hmma, loop.ldsm, loop.depth), (4, 2, 1, 0))

    def test_several_branches_back_to_one_label_are_one_loop_ending_at_the_last(self):
        text = listing("L .L_x_5", "HMMA.16816.F32.F16 R0, R8, R10, R0", "@P1 BRA `(.L_x_5)", *body(3),
                       "@P0 BRA `(.L_x_5)", "EXIT")
        (loop,) = loops_of(text)
        self.assertEqual((loop.start, loop.end, loop.instructions, loop.hmma), (0, 0x50, 6, 1))

    def test_a_nested_loop_counts_once_in_its_outer_loop_and_is_reported_itself(self):
        text = listing("L .L_x_38", *body(10), "L .L_x_37", *body(2, "HMMA.16816.F32.BF16 R0, R8, R10, R0"),
                       "@!P0 BRA `(.L_x_37)", *body(4, "HMMA.16816.F32.BF16 R4, R8, R12, R4"),
                       "@!P1 BRA `(.L_x_38)", "EXIT")
        outer, inner = loops_of(text)
        self.assertEqual((outer.header, outer.instructions, outer.hmma, outer.depth), (".L_x_38", 18, 6, 0))
        self.assertEqual((inner.header, inner.instructions, inner.hmma, inner.depth), (".L_x_37", 3, 2, 1))
        self.assertIs(sc.main_loop([outer, inner]), outer)

    def test_a_self_branch_trap_is_a_loop_without_hmma(self):
        (trap,) = loops_of(listing("EXIT", "L .L_x_61", "BRA `(.L_x_61)", "NOP"))
        self.assertEqual((trap.start, trap.end, trap.hmma), (0x10, 0x10, 0))
        self.assertIsNone(sc.main_loop([trap]))


class MainLoop(unittest.TestCase):
    def test_most_hmma_wins_and_a_tie_goes_to_the_shorter_unmasked_copy(self):
        hmma = "HMMA.16816.F32.BF16 R0, R8, R10, R0"
        masked = ["L .L_x_10", *body(8, hmma), *body(30, "FSEL R0, R0, -INF, P2"), "@P0 BRA `(.L_x_10)"]
        steady = ["L .L_x_20", *body(8, hmma), *body(12), "@P0 BRA `(.L_x_20)"]
        small = ["L .L_x_30", *body(4, hmma), "@P0 BRA `(.L_x_30)"]
        loops = loops_of(listing(*masked, *steady, *small, "EXIT"))
        self.assertEqual([l.header for l in loops], [".L_x_10", ".L_x_20", ".L_x_30"])
        main = sc.main_loop(loops)
        self.assertEqual((main.header, main.instructions, main.hmma), (".L_x_20", 21, 8))

    def test_analyze_reports_the_main_loop_ratios_and_local_memory(self):
        text = listing("STL [R1], R2", *body(2), "L .L_x_1", *body(4, "LDSM.16.M88.4 R8, [R8]"),
                       *body(8, "HMMA.16816.F32.BF16 R0, R8, R10, R0"), *body(3), "@P0 BRA `(.L_x_1)",
                       "LDL R2, [R1]", "LDL.64 R4, [R1+0x8]", "EXIT")
        ptxas = {"label": "attention_forward bf16 d128 w2048 r1 tile 64x64 4w 2s sm_90a", "registers": 174,
                 "spill_bytes": 0, "stack_bytes": 16, "static_smem": 0, "dynamic_smem": 81920}
        r = sc.analyze(ptxas, text)
        self.assertEqual(r["arch"], "sm_90a")
        self.assertEqual(r["local_instructions"], 3)
        self.assertEqual(r["main_loop"]["instructions"], 16)
        self.assertEqual(r["instructions_per_hmma"], 2.0)
        self.assertEqual(r["ldsm_per_hmma"], 0.5)
        self.assertEqual((r["threads_per_cta"], r["ctas_per_sm"]), (128, 2))
        self.assertEqual(sc.failures(r, 0, 0, None), ["3 local-memory instructions (LDL/STL; max 0)"])
        self.assertEqual(sc.failures(r, 3, 0, 1.5), ["2.0 instructions per HMMA in the main loop (max 1.5)"])

    def test_a_kernel_without_hmma_has_no_main_loop_and_passes_the_ratio_check(self):
        r = sc.analyze({"label": "merge_partials bf16 d128 4w sm_80", "registers": 32, "spill_bytes": 0,
                        "stack_bytes": 0, "static_smem": 0, "dynamic_smem": 0},
                       listing("L .L_x_0", *body(5), "@P0 BRA `(.L_x_0)", "EXIT"))
        self.assertIsNone(r["main_loop"])
        self.assertIsNone(r["instructions_per_hmma"])
        self.assertEqual(sc.failures(r, 0, 0, 1.0), [])


class Ptxas(unittest.TestCase):
    def test_reads_the_label_and_the_summary_line(self):
        text = ("kernel attention_forward bf16 d64 w2048 r2 causal tile 64x64 4w 3s sm_80\n"
                "ptxas info    : Used 128 registers, used 1 barriers\n"
                "registers 128, spill bytes 8, static shared bytes 16, stack bytes 24, dynamic shared bytes 57344\n")
        self.assertEqual(sc.parse_ptxas(text), {
            "label": "attention_forward bf16 d64 w2048 r2 causal tile 64x64 4w 3s sm_80", "registers": 128,
            "spill_bytes": 8, "stack_bytes": 24, "static_smem": 16, "dynamic_smem": 57344})

    def test_a_dump_from_an_older_binary_is_not_read(self):
        self.assertIsNone(sc.parse_ptxas("registers 128, spill bytes 0, static shared bytes 0, stack bytes 0\n"))

    def test_warps_and_arch_come_from_the_label(self):
        self.assertEqual(sc.warps_of("attention_forward bf16 d128 w4096 r2 tile 128x64 8w 2s sm_90a"), 8)
        self.assertEqual(sc.warps_of("pack_rows f16 d64 w2048 r4 group 1/2 4w sm_80"), 4)
        self.assertEqual(sc.arch_of("pack_rows f16 d64 w2048 r4 group 1/2 4w sm_80"), "sm_80")


class Occupancy(unittest.TestCase):
    def test_the_dense_d128_kernel_fits_two_ctas_by_registers_and_shared_memory(self):
        # 174 -> 176 registers: 5632 per warp, 2 warps per 16384-register sub-partition, 8 warps per SM.
        self.assertEqual(sc.occupancy("sm_90a", 174, 4, 81920)[:2], (2, ["registers", "shared"]))
        # 167936 / (81920 + 1024) = 2.02 on sm_80
        self.assertEqual(sc.occupancy("sm_80", 171, 4, 81920)[:2], (2, ["registers", "shared"]))

    def test_registers_are_allocated_per_sub_partition(self):
        # 134 -> 136 registers: 4352 per warp, 3 per sub-partition = 12 warps (pooled: 15) -> 3 CTAs of 4 warps
        ctas, binding, limits = sc.occupancy("sm_90a", 134, 4, 57344)
        self.assertEqual((ctas, binding), (3, ["registers"]))
        self.assertEqual(limits, {"ctas": 32, "threads": 16, "registers": 3, "shared": 4})

    def test_shared_memory_per_sm_and_the_reserved_kilobyte(self):
        # 3 x (56 KiB + 1 KiB) = 171 KiB > 164 KiB on sm_80, fits in 228 KiB on sm_90
        self.assertEqual(sc.occupancy("sm_80", 64, 4, 56 * 1024)[:2], (2, ["shared"]))
        self.assertEqual(sc.occupancy("sm_90a", 64, 4, 56 * 1024)[:2], (4, ["shared"]))
        # exactly 163 KiB + 1 KiB reserved fills an sm_80 SM
        self.assertEqual(sc.occupancy("sm_80", 32, 4, 163 * 1024)[0], 1)
        self.assertEqual(sc.occupancy("sm_80", 32, 4, 163 * 1024 + 1)[0], 0)

    def test_threads_and_ctas_per_sm_bound_small_kernels(self):
        self.assertEqual(sc.occupancy("sm_80", 16, 8, 0)[:2], (8, ["threads"]))
        self.assertEqual(sc.occupancy("sm_90a", 16, 1, 0)[:2], (32, ["ctas"]))

    def test_an_arch_without_a_model_gives_no_figure(self):
        self.assertEqual(sc.occupancy("sm_100a", 64, 4, 0), (None, [], {}))


class CommandLine(unittest.TestCase):
    def test_workload_flags_pass_through_and_archs_default_to_both(self):
        args = sc.parse_args(["--segments", "2048,4096", "--dilations", "1,2", "--head-dim", "64", "--causal"])
        self.assertEqual(args.workload, ["--segments", "2048,4096", "--dilations", "1,2", "--head-dim", "64",
                                         "--causal"])
        self.assertEqual(args.archs, ["sm_80", "sm_90a"])
        self.assertFalse(args.check)

    def test_a_threshold_implies_the_check_and_defaults_local_and_spills_to_zero(self):
        args = sc.parse_args(["--config", "c.json", "--arch", "sm_90a", "--max-instructions-per-hmma", "12"])
        self.assertEqual((args.check, args.max_local, args.max_spill_bytes), (True, 0, 0))
        self.assertEqual(args.archs, ["sm_90a"])

    def test_usage_errors_exit_2(self):
        for argv in (["--segments", "2048"], ["--config", "c.json", "--bogus"], ["--config", "c.json", "--arch", "x"],
                     ["--config", "c.json", "--max-local", "-1"]):
            with self.subTest(argv=argv), self.assertRaises(SystemExit) as e:
                stderr, sys.stderr = sys.stderr, open("/dev/null", "w")
                try:
                    sc.parse_args(argv)
                finally:
                    sys.stderr.close()
                    sys.stderr = stderr
            self.assertEqual(e.exception.code, 2)

    def test_a_missing_binary_exits_2(self):
        stderr, sys.stderr = sys.stderr, open("/dev/null", "w")
        try:
            self.assertEqual(sc.main(["--config", "c.json", "--dilatron", "/nonexistent/dilatron"]), 2)
        finally:
            sys.stderr.close()
            sys.stderr = stderr


if __name__ == "__main__":
    unittest.main()
