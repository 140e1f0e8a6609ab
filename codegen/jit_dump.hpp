// DILATRON_JIT_DUMP: what NVRTC saw and said for one kernel, as files in the dump directory
//   <stem>.cu     the rendered translation unit
//   <stem>.log    the NVRTC options, then NVRTC's log (errors, warnings, ptxas -v lines)
//   <stem>.ptx    the PTX (a second compile for the virtual arch; NVRTC keeps none when it emits CUBIN)
//   <stem>.ptxas  the kernel's label, the ptxas lines and the figures read from them (registers, spills,
//                 static shared, stack) plus the dynamic shared memory a launch needs
//   <stem>.cubin  the binary NVRTC produced, byte for byte what the cache stores and the driver loads, so
//                 SASS tools (nvdisasm, cuobjdump; bench/sass_check.py) read exactly what runs
// A file whose text is empty is not written, so a failed compile leaves the source and the log.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace dilatron::codegen {

struct KernelDump {
  std::string stem;
  std::string source, log, ptx, ptxas;
  std::vector<char> cubin;
};

// A file name stem for a kernel: its label made file-safe plus a short hash of what was compiled, so
// kernels sharing a label (causal or not, other tiles) do not overwrite each other.
std::string dump_stem(std::string_view label, std::string_view compiled_text);

// Creates the directory when missing. Never throws: a dump is a debugging aid and must not turn a good
// compile into a failure, so every problem is a warning on stderr.
void write_dump(const std::filesystem::path& dir, const KernelDump& dump) noexcept;

}  // namespace dilatron::codegen
