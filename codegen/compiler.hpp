// The NVRTC driver: compiles a rendered kernel straight to CUBIN for one architecture, with the embedded
// templates as headers, and reports what ptxas said about registers, spills and shared memory. The
// JitOptions (codegen/jit_options.hpp) add line info, a dump of each compile and a check on ptxas.
#pragma once

#include <string>
#include <vector>

#include "codegen/jit_options.hpp"
#include "codegen/kernel_spec.hpp"
#include "codegen/render.hpp"

namespace dilatron::codegen {

struct PtxasReport {
  int registers = 0;
  int spill_bytes = 0;   // spill stores + spill loads
  int shared_bytes = 0;  // static shared memory
  int stack_bytes = 0;
};

struct CompiledKernel {
  std::string lowered_name;  // the symbol to look up in the module
  std::vector<char> cubin;
  PtxasReport report;
  double compile_ms = 0;
  std::string log;  // NVRTC's log, ptxas report included
};

// The NVRTC options for an architecture; part of every cache key.
std::vector<std::string> compile_options(const std::string& arch, const JitOptions& jit = jit_options());

// Options space-joined, as the cache key and the dump's log record them.
std::string options_text(const std::vector<std::string>& options);

// "major.minor" of the NVRTC that compiles: the loaded library's, else the toolkit's this library was
// built with (so a machine without NVRTC still computes the keys of pre-warmed kernels).
const std::string& nvrtc_version();

// Throws dilatron::Error naming the kernel, with NVRTC's full log, when compilation fails, and when
// jit.ptxas_check refuses the result. With DILATRON_DEVICE=emulator the host compiler builds a shared
// object for the emulated device instead (codegen/host_compile.hpp; no ptxas report).
CompiledKernel compile(const KernelSpec& spec, const JitOptions& jit = jit_options());

// compile() for any translation unit; `label` names it in errors and dump files.
CompiledKernel compile_unit(const RenderedKernel& unit, const std::string& arch, const std::string& label,
                            const JitOptions& jit);

// Reads ptxas "-v" lines ("Used 40 registers, 16 bytes smem", "8 bytes spill stores, 8 bytes spill loads").
PtxasReport parse_ptxas_report(const std::string& log);

// Why DILATRON_JIT_PTXAS_CHECK refuses a kernel (spills, or a stack frame: both are local memory, slow
// on every access), or empty when it passes.
std::string ptxas_check_failure(const PtxasReport& report);

}  // namespace dilatron::codegen
