#!/usr/bin/env python3
"""Static performance check of Dilatron's kernels, on the CPU: compile, disassemble, count.

For each architecture (default: sm_80 and sm_90a) the script runs

    dilatron cache warm <workload flags> --arch ARCH --cache-dir <fresh temp dir>

with DILATRON_JIT_DUMP=<temp dir>, so every kernel of the configuration is compiled by the project's
own NVRTC path and leaves its dump: <stem>.cubin (the binary the driver would load) and <stem>.ptxas
(the kernel's label, registers, spill bytes, static shared memory and the dynamic shared memory a
launch needs). Each CUBIN is disassembled with nvdisasm, which is installed from PyPI
(nvidia-cuda-nvdisasm) on first use into a virtualenv at build/sass-tools (DILATRON_SASS_TOOLS moves
it; DILATRON_NVDISASM=PATH uses a disassembler you already have instead).

The main loop
  nvdisasm prints each instruction as `/*addr*/ [@pred] OPCODE operands ;` and branch targets as
  labels (`.L_x_12:` on a line of its own, naming the next instruction's address). A loop is a BRA
  whose target label is at the branch's address or below it. Branches back to one label are one loop,
  from the label to the last of them, so a `continue` does not make a second loop. A loop's figures
  count every instruction whose address lies in that range once: an inner loop nested in it adds its
  instructions (and HMMAs) once, not once per trip, and is reported as a loop of its own besides.
  Every loop with at least one HMMA is reported (--loops prints them); the main loop is the one with
  the most HMMA, ties going to the one with the fewest instructions: when a kernel keeps a masked copy
  of its loop for edge tiles next to the unmasked steady-state one, the steady state wins. The figures
  are static: a rolled inner loop (say over the head dimension) runs several times per trip of the
  main loop but counts once, so instructions per HMMA compare kernels of one shape, version against
  version, not against a dynamic profile.

Per kernel and architecture it reports
  registers, spill bytes   ptxas (the dump's .ptxas)
  local                    LDL + STL instructions in the whole kernel (spills, stack arrays): must be 0
  smem                     static shared memory (ptxas) + dynamic shared memory (KernelSpec::shared_bytes,
                           recorded in the dump), bytes
  loop instr, HMMA         instructions and HMMA instructions in the main loop
  instr/HMMA, LDSM/HMMA    the main loop's instructions and LDSM (ldmatrix) instructions per HMMA
  CTAs/SM                  resident CTAs per SM on the kernel's architecture, from the model below

Occupancy model (the arithmetic of the toolkit's cuda_occupancy.h, with the shared-memory carve-out
at its maximum)
  threads per CTA   32 x the warps in the label ("4w"); at most 2048 threads and 32 CTAs per SM
  registers         per thread rounded up to a multiple of 8 (a warp's allocation is registers x 32 in
                    units of 256). The SM's 65536 registers sit in 4 sub-partitions of 16384 and a warp
                    lives in one, so warps per SM = 4 x floor(16384 / (32 x rounded registers)); CTAs =
                    floor(warps per SM / warps per CTA). (Pooling all 65536 would overstate it: at 174
                    registers, 11 warps instead of 8.)
  shared memory     per CTA: static + dynamic + 1 KiB the driver reserves, rounded up to 128 bytes; per
                    SM 164 KiB on sm_80/sm_87, 100 KiB on sm_86/sm_89, 228 KiB on sm_90
  CTAs per SM = the smallest of the four limits; --json names the binding ones ("limited_by") and gives
  each ("cta_limits").

--check fails (exit 1) and names every kernel over a threshold: --max-local (default 0),
--max-spill-bytes (default 0), --max-instructions-per-hmma (none by default; kernels without HMMA are
not held to it). Giving a threshold implies --check. Exit 2: a bad command line, a missing dilatron
binary or disassembler, or a configuration dilatron refuses.

Example (from the repository root, after `cmake --build build --target dilatron_cli`):

    python3 bench/sass_check.py --segments 16384 --dilations 1 --kernel attention_forward
    python3 bench/sass_check.py --segments 2048,4096 --dilations 1,2 --arch sm_90a --json
    python3 bench/sass_check.py --segments 16384 --dilations 1 --check --max-instructions-per-hmma 12
"""

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NVDISASM_PACKAGE = "nvidia-cuda-nvdisasm"


class UsageError(Exception):
    """A problem with the command line or the environment: exit status 2."""


class WorkFailed(Exception):
    """dilatron could not build the kernels: exit status 1."""


# ---------------------------------------------------------------------------------------------------
# SASS: parsing and loops

# `        /*0f10*/              @!P1 BRA `(.L_x_8) ;` -- address, optional VLIW brace, predicate, opcode
_INSTRUCTION = re.compile(r"^\s*/\*([0-9a-fA-F]+)\*/\s*\{?\s*(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_]*(?:\.[A-Z0-9_]+)*)(.*)$")
_LABEL = re.compile(r"^([.$\w]+):\s*$")
_SECTION = re.compile(r"^\s*\.section\s+([^,\s]+)")
_TARGET = re.compile(r"`\(([^)]+)\)")


@dataclass
class Instruction:
    address: int
    opcode: str  # with modifiers, e.g. HMMA.16816.F32.BF16
    target: str = ""  # the label a branch names

    @property
    def base(self) -> str:
        return self.opcode.split(".", 1)[0]


@dataclass
class Section:
    name: str
    instructions: list = field(default_factory=list)
    labels: dict = field(default_factory=dict)  # label -> address of the instruction after it


def parse_sass(text):
    """nvdisasm output -> the executable (.text.*) sections, each with its instructions and labels."""
    sections, current, pending = [], None, []
    for line in text.splitlines():
        m = _SECTION.match(line)
        if m:
            current = Section(m.group(1)) if m.group(1).startswith(".text.") else None
            if current:
                sections.append(current)
            pending = []
            continue
        if current is None:
            continue
        m = _INSTRUCTION.match(line)
        if m:
            target = _TARGET.search(m.group(3))
            ins = Instruction(int(m.group(1), 16), m.group(2), target.group(1) if target else "")
            current.instructions.append(ins)
            for label in pending:
                current.labels[label] = ins.address
            pending = []
            continue
        m = _LABEL.match(line)
        if m:
            pending.append(m.group(1))
    return sections


@dataclass
class Loop:
    header: str
    start: int  # address of the first instruction
    end: int  # address of the last backward branch to the header
    instructions: int
    hmma: int
    ldsm: int
    depth: int = 0  # how many other loops contain this one

    def contains(self, other):
        return self is not other and self.start <= other.start and other.end <= self.end


def count(instructions, bases):
    return sum(1 for i in instructions if i.base in bases)


def find_loops(section):
    """Every loop of a section (see the module docstring), in address order."""
    ends = {}
    for ins in section.instructions:
        if ins.base == "BRA" and ins.target in section.labels and section.labels[ins.target] <= ins.address:
            ends[ins.target] = max(ends.get(ins.target, -1), ins.address)
    loops = []
    for header, end in ends.items():
        start = section.labels[header]
        body = [i for i in section.instructions if start <= i.address <= end]
        loops.append(Loop(header, start, end, len(body), count(body, {"HMMA"}), count(body, {"LDSM"})))
    loops.sort(key=lambda l: (l.start, -l.end))
    for loop in loops:
        loop.depth = sum(1 for other in loops if other.contains(loop))
    return loops


def main_loop(loops):
    """The loop with the most HMMA, ties to the fewest instructions; None when no loop has an HMMA."""
    candidates = [l for l in loops if l.hmma > 0]
    return min(candidates, key=lambda l: (-l.hmma, l.instructions, l.start)) if candidates else None


# ---------------------------------------------------------------------------------------------------
# The dump's .ptxas file and the label

_SUMMARY = re.compile(
    r"^registers (\d+), spill bytes (\d+), static shared bytes (\d+), stack bytes (\d+), dynamic shared bytes (\d+)$",
    re.M)


def parse_ptxas(text):
    """The label and figures dilatron writes into <stem>.ptxas (codegen/compiler.cpp, ptxas_text)."""
    first = text.splitlines()[0] if text else ""
    m = _SUMMARY.search(text)
    if not first.startswith("kernel ") or not m:
        return None
    registers, spill, static, stack, dynamic = (int(g) for g in m.groups())
    return {"label": first[len("kernel "):], "registers": registers, "spill_bytes": spill,
            "stack_bytes": stack, "static_smem": static, "dynamic_smem": dynamic}


def warps_of(label):
    """Warps per CTA from a label ("... tile 64x64 4w 2s sm_90a" or "pack_rows ... 4w sm_80")."""
    m = re.search(r"\b(\d+)w\b", label)
    return int(m.group(1)) if m else None


def arch_of(label):
    return label.rsplit(" ", 1)[-1]


# ---------------------------------------------------------------------------------------------------
# Occupancy

# compute capability -> (shared memory per SM, threads per SM, CTAs per SM)
_SM = {80: (164 * 1024, 2048, 32), 87: (164 * 1024, 2048, 32), 86: (100 * 1024, 1536, 16),
       89: (100 * 1024, 1536, 24), 90: (228 * 1024, 2048, 32)}
REGISTERS_PER_SM, SUB_PARTITIONS, RESERVED_SMEM_PER_CTA = 65536, 4, 1024


def arch_number(arch):
    m = re.fullmatch(r"sm_(\d+)a?", arch)
    if not m:
        raise UsageError(f"--arch {arch}: expected sm_XY or sm_XYa, e.g. sm_90a")
    return int(m.group(1))


def occupancy(arch, registers, warps, smem_bytes):
    """(CTAs per SM, the binding limits, every limit) by the model in the module docstring; CTAs None when
    the architecture has no model or the label names no warps."""
    sm = _SM.get(arch_number(arch))
    if sm is None or not warps:
        return None, [], {}
    smem_per_sm, threads_per_sm, ctas_per_sm = sm
    limits = {"ctas": ctas_per_sm, "threads": threads_per_sm // (32 * warps)}
    regs_per_warp = math.ceil(max(registers, 1) / 8) * 8 * 32
    warps_per_sm = SUB_PARTITIONS * ((REGISTERS_PER_SM // SUB_PARTITIONS) // regs_per_warp)
    limits["registers"] = warps_per_sm // warps
    per_cta = math.ceil((smem_bytes + RESERVED_SMEM_PER_CTA) / 128) * 128
    limits["shared"] = smem_per_sm // per_cta
    ctas = min(limits.values())
    return ctas, [name for name in ("registers", "shared", "threads", "ctas") if limits[name] == ctas], limits


# ---------------------------------------------------------------------------------------------------
# One kernel

def analyze(ptxas, sass_text):
    """The report of one kernel: its .ptxas figures plus what its SASS says."""
    sections = parse_sass(sass_text)
    everything = [i for s in sections for i in s.instructions]
    loops = [l for s in sections for l in find_loops(s)]
    hmma_loops = [l for l in loops if l.hmma > 0]
    main = main_loop(loops)
    arch = arch_of(ptxas["label"])
    warps = warps_of(ptxas["label"])
    smem = ptxas["static_smem"] + ptxas["dynamic_smem"]
    ctas, binding, limits = occupancy(arch, ptxas["registers"], warps, smem)
    return {
        "label": ptxas["label"],
        "arch": arch,
        "registers": ptxas["registers"],
        "spill_bytes": ptxas["spill_bytes"],
        "stack_bytes": ptxas["stack_bytes"],
        "local_instructions": count(everything, {"LDL", "STL"}),
        "static_smem": ptxas["static_smem"],
        "dynamic_smem": ptxas["dynamic_smem"],
        "instructions": len(everything),
        "hmma": count(everything, {"HMMA"}),
        "main_loop": asdict(main) if main else None,
        "instructions_per_hmma": round(main.instructions / main.hmma, 2) if main else None,
        "ldsm_per_hmma": round(main.ldsm / main.hmma, 3) if main else None,
        "threads_per_cta": 32 * warps if warps else None,
        "ctas_per_sm": ctas,
        "limited_by": binding,
        "cta_limits": limits,
        "hmma_loops": [asdict(l) for l in hmma_loops],
    }


def failures(report, max_local, max_spill_bytes, max_instructions_per_hmma):
    out = []
    if max_local is not None and report["local_instructions"] > max_local:
        out.append(f"{report['local_instructions']} local-memory instructions (LDL/STL; max {max_local})")
    if max_spill_bytes is not None and report["spill_bytes"] > max_spill_bytes:
        out.append(f"{report['spill_bytes']} spill bytes (max {max_spill_bytes})")
    ratio = report["instructions_per_hmma"]
    if max_instructions_per_hmma is not None and ratio is not None and ratio > max_instructions_per_hmma:
        out.append(f"{ratio} instructions per HMMA in the main loop (max {max_instructions_per_hmma})")
    return out


# ---------------------------------------------------------------------------------------------------
# Tools: dilatron and nvdisasm

def say(message):
    print(f"sass_check: {message}", file=sys.stderr, flush=True)


def _locate_nvdisasm(venv):
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    shown = subprocess.run([str(python), "-m", "pip", "show", "-f", NVDISASM_PACKAGE], capture_output=True, text=True)
    if shown.returncode != 0:
        return None
    location = re.search(r"^Location: (.+)$", shown.stdout, re.M)
    files = [line.strip() for line in shown.stdout.split("Files:", 1)[-1].splitlines()]
    for f in files:
        if location and (f.endswith("/bin/nvdisasm") or f == "bin/nvdisasm"):
            path = Path(location.group(1)) / f
            if path.exists():
                return path
    return None


def nvdisasm_path():
    """The disassembler: $DILATRON_NVDISASM, else the PyPI wheel's, installed into the tools venv once."""
    given = os.environ.get("DILATRON_NVDISASM")
    if given:
        if not (os.path.isfile(given) and os.access(given, os.X_OK)):
            raise UsageError(f"DILATRON_NVDISASM={given} is not an executable file")
        return Path(given)
    venv = Path(os.environ.get("DILATRON_SASS_TOOLS") or REPO / "build" / "sass-tools")
    found = _locate_nvdisasm(venv)
    if found:
        return found
    say(f"installing {NVDISASM_PACKAGE} from PyPI into {venv} (first use; DILATRON_SASS_TOOLS moves it)")
    steps = [] if (venv / "bin" / "python").exists() else [
        ([sys.executable, "-m", "venv", str(venv)], "on Debian: apt-get install python3-venv")]
    steps.append(([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                   NVDISASM_PACKAGE], "is PyPI reachable?"))
    for step, hint in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            raise UsageError(f"`{' '.join(step)}` failed ({hint}):\n{done.stdout}{done.stderr}".rstrip())
    found = _locate_nvdisasm(venv)
    if not found:
        raise UsageError(f"{NVDISASM_PACKAGE} is installed in {venv} but `pip show -f` lists no bin/nvdisasm")
    return found


def compile_kernels(dilatron, workload, arch, work):
    """Runs `dilatron cache warm` into a fresh cache with the JIT dump on; returns the dump directory."""
    dump, cache = work / f"dump-{arch}", work / f"cache-{arch}"
    env = dict(os.environ, DILATRON_JIT_DUMP=str(dump))
    for name in ("DILATRON_JIT_PTXAS_CHECK", "DILATRON_DISABLE_JIT"):  # report spills rather than fail on them
        env.pop(name, None)
    command = [str(dilatron), "cache", "warm", *workload, "--arch", arch, "--cache-dir", str(cache)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        message = f"`{' '.join(command)}` exited {done.returncode}:\n{done.stderr.strip()}"
        raise UsageError(message) if done.returncode == 2 else WorkFailed(message)
    return dump


def kernels_in(dump, kernel_filter):
    """(ptxas figures, cubin path) of every dumped kernel whose label contains kernel_filter."""
    out, labels = [], []
    for ptxas_file in sorted(dump.glob("*.ptxas")):
        figures = parse_ptxas(ptxas_file.read_text())
        cubin = ptxas_file.with_suffix(".cubin")
        if figures is None or not cubin.exists():
            raise UsageError(f"{ptxas_file.parent} holds no .cubin or labelled .ptxas for {ptxas_file.stem}: the "
                             "dilatron binary predates them; rebuild it (cmake --build build --target dilatron_cli)")
        labels.append(figures["label"])
        if kernel_filter in figures["label"]:
            out.append((figures, cubin))
    return out, labels


# ---------------------------------------------------------------------------------------------------
# Output

def natural_key(text):
    """w2048 before w16384."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _fmt(value, spec=""):
    return "-" if value is None else format(value, spec)


def table(reports):
    header = ["kernel", "arch", "regs", "spill", "local", "smem", "loop instr", "HMMA", "instr/HMMA", "LDSM/HMMA",
              "CTAs/SM"]
    rows = []
    for r in reports:
        loop = r["main_loop"] or {}
        rows.append([r["label"].rsplit(" ", 1)[0], r["arch"], str(r["registers"]), str(r["spill_bytes"]),
                     str(r["local_instructions"]), f"{r['static_smem']}+{r['dynamic_smem']}",
                     _fmt(loop.get("instructions")), _fmt(loop.get("hmma")),
                     _fmt(r["instructions_per_hmma"], ".2f"), _fmt(r["ldsm_per_hmma"], ".3f"),
                     _fmt(r["ctas_per_sm"])])
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    lines = []
    for row in [header] + rows:
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [cell.rjust(w) for cell, w in zip(row[2:], widths[2:])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def loop_lines(reports):
    lines = []
    for r in reports:
        main = r["main_loop"]
        for l in r["hmma_loops"]:
            tag = "  main" if main and l["start"] == main["start"] and l["end"] == main["end"] else ""
            lines.append(f"{r['label']}: loop {l['header']} {l['start']:#06x}-{l['end']:#06x} depth {l['depth']}: "
                         f"{l['instructions']} instructions, {l['hmma']} HMMA, {l['ldsm']} LDSM{tag}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# Command line

class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own status is 2 as well; keep the hint short
        self.print_usage(sys.stderr)
        print(f"sass_check: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def parse_args(argv):
    p = _Parser(prog="sass_check.py", description=__doc__.split("\n\n", 1)[0],
                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    w = p.add_argument_group("workload (passed to `dilatron cache warm`)")
    w.add_argument("--segments", help="segment length per branch, e.g. 2048,4096")
    w.add_argument("--dilations", help="dilation rate per branch, e.g. 1,2")
    w.add_argument("--head-dim", help="head dimension (64 or 128)")
    w.add_argument("--dtype", help="bf16 or f16")
    w.add_argument("--causal", action="store_true", help="causal masking")
    w.add_argument("--backward", action="store_true", help="also the backward pass's kernels")
    w.add_argument("--mode", help="longnet or head_groups")
    w.add_argument("--ranks", help="P > 1: also the GPU ring's kernels (attention_block for received blocks)")
    w.add_argument("--config", help="JSON config file instead of the flags above")
    p.add_argument("--arch", action="append",
                   help="architecture(s), repeated or comma-separated (default: sm_80 and sm_90a)")
    p.add_argument("--kernel", default="", metavar="TEXT", help="only kernels whose label contains TEXT")
    p.add_argument("--dilatron", default=str(REPO / "build" / "bin" / "dilatron"), metavar="PATH",
                   help="the dilatron binary (default: build/bin/dilatron)")
    p.add_argument("--json", action="store_true", help="print a JSON list of objects, one per kernel and arch")
    p.add_argument("--loops", action="store_true", help="also list every loop holding HMMA instructions")
    c = p.add_argument_group("check (exit 1 naming every kernel over a threshold)")
    c.add_argument("--check", action="store_true", help="apply the thresholds")
    c.add_argument("--max-local", type=int, metavar="N", help="LDL/STL instructions (default 0)")
    c.add_argument("--max-spill-bytes", type=int, metavar="N", help="ptxas spill bytes (default 0)")
    c.add_argument("--max-instructions-per-hmma", type=float, metavar="X",
                   help="main-loop instructions per HMMA (default: not checked)")
    args = p.parse_args(argv)
    if not args.config and not (args.segments and args.dilations):
        p.error("give --segments and --dilations, or --config FILE")
    thresholds = (args.max_local, args.max_spill_bytes, args.max_instructions_per_hmma)
    if any(t is not None and t < 0 for t in thresholds):
        p.error("thresholds must not be negative")
    args.check = args.check or any(t is not None for t in thresholds)
    if args.check:
        args.max_local = 0 if args.max_local is None else args.max_local
        args.max_spill_bytes = 0 if args.max_spill_bytes is None else args.max_spill_bytes
    archs = [a.strip() for given in (args.arch or ["sm_80,sm_90a"]) for a in given.split(",") if a.strip()]
    try:
        for a in archs:
            arch_number(a)
    except UsageError as e:
        p.error(str(e))
    args.archs = list(dict.fromkeys(archs))
    args.workload = []
    for flag in ("segments", "dilations", "head_dim", "dtype", "mode", "ranks", "config"):
        value = getattr(args, flag)
        if value is not None:
            args.workload += ["--" + flag.replace("_", "-"), value]
    for flag in ("causal", "backward"):
        if getattr(args, flag):
            args.workload.append("--" + flag)
    return args


def run(argv):
    args = parse_args(argv)
    dilatron = Path(args.dilatron)
    if not (dilatron.is_file() and os.access(dilatron, os.X_OK)):
        raise UsageError(f"no dilatron binary at {dilatron}: build it (cmake --build build --target dilatron_cli) or "
                         "pass --dilatron PATH")
    nvdisasm = nvdisasm_path()
    reports = []
    with tempfile.TemporaryDirectory(prefix="sass-check-") as tmp:
        for arch in args.archs:
            dump = compile_kernels(dilatron, args.workload, arch, Path(tmp))
            kernels, labels = kernels_in(dump, args.kernel)
            if not labels:
                raise WorkFailed(f"dilatron compiled no kernel into {dump}, or the dump could not be written")
            if not kernels:
                raise UsageError(f"--kernel '{args.kernel}' matches none of this configuration's kernels for {arch}: "
                                 + "; ".join(labels))
            for figures, cubin in kernels:
                sass = subprocess.run([str(nvdisasm), "-c", str(cubin)], capture_output=True, text=True)
                if sass.returncode != 0:
                    raise WorkFailed(f"nvdisasm failed on {cubin.name}: {sass.stderr.strip()}")
                reports.append(analyze(figures, sass.stdout))
    reports.sort(key=lambda r: (natural_key(r["label"].rsplit(" ", 1)[0]), r["arch"]))
    failed = []
    if args.check:
        for r in reports:
            r["failures"] = failures(r, args.max_local, args.max_spill_bytes, args.max_instructions_per_hmma)
            if r["failures"]:
                failed.append(r)
    if args.json:
        print(json.dumps(reports, indent=2))
    else:
        print(table(reports))
        if args.loops:
            print("\n" + loop_lines(reports))
    for r in failed:
        print(f"FAIL {r['label']}: {'; '.join(r['failures'])}", file=sys.stderr)
    if args.check:
        say(f"{len(failed)} of {len(reports)} kernels fail the check" if failed
            else f"all {len(reports)} kernels pass the check")
    return 1 if failed else 0


def main(argv=None):
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        say(str(e))
        return 2
    except WorkFailed as e:
        say(str(e))
        return 1


if __name__ == "__main__":
    sys.exit(main())
