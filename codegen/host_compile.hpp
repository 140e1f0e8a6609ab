// The emulated device's backend beside NVRTC: the very source render(spec) gives NVRTC, behind
// host_prelude.cuh, compiled by the host's C++ compiler ($CXX, else c++) into a shared object that
// emulator/ loads. One exported entry calls the instantiation with its parameter block.
#pragma once

#include <string>
#include <vector>

#include "codegen/kernel_spec.hpp"

namespace dilatron::codegen {

// The symbol the object exports: void dilatron_emulated_entry(const void* args).
inline constexpr const char* kEmulatedEntry = "dilatron_emulated_entry";
// The object's pointer to the emulator's services (const DilatronEmulatorApi*), set after loading.
inline constexpr const char* kEmulatedApi = "dilatron_emulator_api";
// The kernel's label (a C string), which names it in the emulator's reports.
inline constexpr const char* kEmulatedLabel = "dilatron_emulated_label";

struct HostObject {
  std::vector<char> object;  // the shared object's bytes
  std::string log;           // the compiler's output
  double compile_ms = 0;
};

// The self-contained translation unit: the prelude, `source` (kernel code, explicitly instantiated,
// including templates by name) with every template inlined, the entry calling `name_expression`, and
// the label (`name_expression` when empty).
std::string host_unit(const std::string& source, const std::string& name_expression, const std::string& label = "");
// host_unit of render(spec).
std::string host_source(const KernelSpec& spec);

// The compiler command's words before the source and output paths; part of every emulated cache key.
std::vector<std::string> host_compile_command();

// The first line of `<compiler> --version`, for the cache key ("unknown" if it cannot be run).
const std::string& host_compiler_version();

// Throws dilatron::Error naming the kernel (`label`), with the compiler's log, when the compile fails.
HostObject compile_host_unit(const std::string& unit, const std::string& label);
// compile_host_unit(host_source(spec), spec.label()).
HostObject compile_for_host(const KernelSpec& spec);

}  // namespace dilatron::codegen
