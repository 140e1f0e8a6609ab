#include "codegen/compiler.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>

#include <regex>
#include <sstream>

#include "codegen/host_compile.hpp"
#include "codegen/jit_dump.hpp"
#include "codegen/nvrtc.hpp"
#include "codegen/nvrtc_program.hpp"
#include "common/env.hpp"
#include "common/log.hpp"

namespace dilatron::codegen {
namespace {

// NVRTC keeps PTX only when it compiles for a virtual architecture, so the dump compiles the unit once
// more for compute_XY[a]. The CUBIN always comes from the first compilation alone.
std::string ptx_for_dump(const RenderedKernel& unit, const std::vector<std::string>& options) {
  static constexpr std::string_view kArch = "--gpu-architecture=sm_";
  std::vector<std::string> virtual_options;
  for (const std::string& o : options) {
    if (o.starts_with(kArch)) {
      virtual_options.push_back("--gpu-architecture=compute_" + o.substr(kArch.size()));
    } else if (!o.starts_with("--ptxas-options")) {  // no ptxas runs for a virtual target
      virtual_options.push_back(o);
    }
  }
  nvrtc::Program program(unit.source);
  nvrtc::check(program.compile(virtual_options).result, "nvrtcCompileProgram (PTX for the dump)");
  return program.ptx();
}

// The label first, so tools reading a dump directory name each kernel as `dilatron gen` and `cache ls` do
// (the file stem is the label made file-safe, which loses characters).
std::string ptxas_text(const std::string& label, const std::string& log, const PtxasReport& r,
                       int dynamic_shared_bytes) {
  std::string text = fmt::format("kernel {}\n", label);
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    if (line.find("ptxas") != std::string::npos) text += line + '\n';
  }
  return text + fmt::format(
                    "registers {}, spill bytes {}, static shared bytes {}, stack bytes {}, dynamic shared bytes {}\n",
                    r.registers, r.spill_bytes, r.shared_bytes, r.stack_bytes, dynamic_shared_bytes);
}

int largest_number(const std::string& log, const std::regex& pattern) {
  int total = 0;
  for (auto it = std::sregex_iterator(log.begin(), log.end(), pattern); it != std::sregex_iterator(); ++it) {
    total = std::max(total, std::stoi((*it)[1]));
  }
  return total;
}

}  // namespace

std::vector<std::string> compile_options(const std::string& arch, const JitOptions& jit) {
  // A real sm_ architecture makes NVRTC emit CUBIN directly (no PTX JIT at load time).
  std::vector<std::string> options{"--gpu-architecture=" + arch, "--std=c++17", "-default-device",
                                   "--ptxas-options=-v"};
  if (jit.lineinfo) options.push_back("-lineinfo");
  return options;
}

std::string options_text(const std::vector<std::string>& options) {
  std::string text;
  for (const std::string& o : options) text += (text.empty() ? "" : " ") + o;
  return text;
}

const std::string& nvrtc_version() {
  static const std::string version = [] {
    const nvrtc::Status status = nvrtc::probe();
    if (status.loaded && status.problem.empty()) return fmt::format("{}.{}", status.major, status.minor);
    return std::string(DILATRON_CUDA_VERSION);
  }();
  return version;
}

PtxasReport parse_ptxas_report(const std::string& log) {
  // One kernel per program, so the largest figure of each kind is the kernel's.
  static const std::regex registers(R"(Used (\d+) registers)"), spill_stores(R"((\d+) bytes spill stores)"),
      spill_loads(R"((\d+) bytes spill loads)"), smem(R"((\d+) bytes smem)"), stack(R"((\d+) bytes stack frame)");
  return {largest_number(log, registers), largest_number(log, spill_stores) + largest_number(log, spill_loads),
          largest_number(log, smem), largest_number(log, stack)};
}

std::string ptxas_check_failure(const PtxasReport& r) {
  if (r.spill_bytes == 0 && r.stack_bytes == 0) return {};
  return fmt::format("ptxas reports {} bytes of spill stores and loads and a {}-byte stack frame ({} registers)",
                     r.spill_bytes, r.stack_bytes, r.registers);
}

CompiledKernel compile(const KernelSpec& spec, const JitOptions& jit) {
  if (env::emulated_device()) {
    // The emulated device's backend: the same source for the host; its binary is a shared object.
    HostObject host = compile_for_host(spec);
    return {kEmulatedEntry, std::move(host.object), {}, host.compile_ms, std::move(host.log)};
  }
  return compile_unit(render(spec), spec.arch, spec.label(), jit);
}

CompiledKernel compile_unit(const RenderedKernel& unit, const std::string& arch, const std::string& label,
                            const JitOptions& jit) {
  const std::vector<std::string> options = compile_options(arch, jit);
  nvrtc::Program program(unit.source);
  program.add_name_expression(unit.name_expression);
  const nvrtc::Compilation c = program.compile(options);

  const bool dumping = !jit.dump_dir.empty();
  KernelDump dump;
  if (dumping) {
    dump.stem = dump_stem(label, options_text(options) + "\n" + unit.source);
    dump.source = unit.source;
    dump.log = fmt::format("nvrtc options: {}\n\n{}\n", options_text(options), c.log);
  }
  if (c.result != NVRTC_SUCCESS) {
    if (dumping) write_dump(jit.dump_dir, dump);
    throw Error("nvrtcCompileProgram", int(c.result),
                fmt::format("{} ({}): the kernel does not compile for {}:\n{}\n--- source ---\n{}",
                            nvrtc::api().nvrtcGetErrorString(c.result), label, arch, c.log, unit.source));
  }

  CompiledKernel out;
  out.compile_ms = c.ms;
  out.log = c.log;
  out.lowered_name = program.lowered_name(unit.name_expression);
  out.cubin = program.cubin();
  out.report = parse_ptxas_report(out.log);

  if (dumping) {
    dump.ptxas = ptxas_text(label, out.log, out.report, unit.dynamic_shared_bytes);
    dump.cubin = out.cubin;
    try {
      dump.ptx = ptx_for_dump(unit, options);
    } catch (const Error& e) {
      log::write(log::Level::warn, "DILATRON_JIT_DUMP: no PTX for {}: {}", label, e.what());
    }
    write_dump(jit.dump_dir, dump);
  }
  if (jit.ptxas_check) {
    if (const std::string why = ptxas_check_failure(out.report); !why.empty()) {
      throw Error(fmt::format("{} for {}: {}; DILATRON_JIT_PTXAS_CHECK=1 refuses kernels that use local memory", label,
                              arch, why));
    }
  }
  return out;
}

}  // namespace dilatron::codegen
