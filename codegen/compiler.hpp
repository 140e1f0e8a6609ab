// The NVRTC driver: compiles a rendered kernel straight to CUBIN for one architecture, with the embedded
// templates as headers, and reports what ptxas said about registers, spills and shared memory.
#pragma once

#include <string>
#include <vector>

#include "codegen/kernel_spec.hpp"

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
std::vector<std::string> compile_options(const std::string& arch);

// "major.minor" of the NVRTC that compiles: the loaded library's, else the toolkit's this library was
// built with (so a machine without NVRTC still computes the keys of pre-warmed kernels).
const std::string& nvrtc_version();

// Throws dilatron::Error naming the spec, with NVRTC's full log, when compilation fails.
CompiledKernel compile(const KernelSpec& spec);

// Reads ptxas "-v" lines ("Used 40 registers, 16 bytes smem", "8 bytes spill stores, 8 bytes spill loads").
PtxasReport parse_ptxas_report(const std::string& log);

}  // namespace dilatron::codegen
