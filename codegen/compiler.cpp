#include "codegen/compiler.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>

#include <chrono>
#include <regex>

#include "codegen/nvrtc.hpp"
#include "codegen/render.hpp"
#include "codegen/templates.hpp"

namespace dilatron::codegen {
namespace {

// Owns an nvrtcProgram so every exit path destroys it.
class Program {
 public:
  Program(const std::string& source, const std::vector<TemplateFile>& headers) {
    for (const TemplateFile& f : headers) {
      names_.emplace_back(f.name);
      texts_.emplace_back(f.text);
    }
    std::vector<const char*> names, texts;
    for (std::size_t i = 0; i < names_.size(); ++i) {
      names.push_back(names_[i].c_str());
      texts.push_back(texts_[i].c_str());
    }
    nvrtc::check(nvrtc::api().nvrtcCreateProgram(&program_, source.c_str(), "dilatron_kernel.cu", int(names.size()),
                                                 texts.data(), names.data()),
                 "nvrtcCreateProgram");
  }
  ~Program() { nvrtc::api().nvrtcDestroyProgram(&program_); }
  Program(const Program&) = delete;
  Program& operator=(const Program&) = delete;
  nvrtcProgram get() const { return program_; }

 private:
  std::vector<std::string> names_, texts_;
  nvrtcProgram program_ = nullptr;
};

int first_number(const std::string& log, const std::regex& pattern) {
  int total = 0;
  for (auto it = std::sregex_iterator(log.begin(), log.end(), pattern); it != std::sregex_iterator(); ++it) {
    total = std::max(total, std::stoi((*it)[1]));
  }
  return total;
}

}  // namespace

std::vector<std::string> compile_options(const std::string& arch) {
  // A real sm_ architecture makes NVRTC emit CUBIN directly (no PTX JIT at load time).
  return {"--gpu-architecture=" + arch, "--std=c++17", "-default-device", "--ptxas-options=-v"};
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
  return {first_number(log, registers), first_number(log, spill_stores) + first_number(log, spill_loads),
          first_number(log, smem), first_number(log, stack)};
}

CompiledKernel compile(const KernelSpec& spec) {
  const RenderedKernel rendered = render(spec);
  const nvrtc::Api& api = nvrtc::api();
  Program program(rendered.source, template_files());
  nvrtc::check(api.nvrtcAddNameExpression(program.get(), rendered.name_expression.c_str()), "nvrtcAddNameExpression");

  const std::vector<std::string> options = compile_options(spec.arch);
  std::vector<const char*> option_ptrs;
  for (const std::string& o : options) option_ptrs.push_back(o.c_str());
  const auto start = std::chrono::steady_clock::now();
  const nvrtcResult result = api.nvrtcCompileProgram(program.get(), int(option_ptrs.size()), option_ptrs.data());
  CompiledKernel out;
  out.compile_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();

  std::size_t log_size = 0;
  nvrtc::check(api.nvrtcGetProgramLogSize(program.get(), &log_size), "nvrtcGetProgramLogSize");
  out.log.resize(log_size);
  nvrtc::check(api.nvrtcGetProgramLog(program.get(), out.log.data()), "nvrtcGetProgramLog");
  while (!out.log.empty() && (out.log.back() == '\0' || out.log.back() == '\n')) out.log.pop_back();
  if (result != NVRTC_SUCCESS) {
    throw Error("nvrtcCompileProgram", int(result),
                fmt::format("{} ({}): kernel [{}] does not compile for {}:\n{}\n--- source ---\n{}",
                            api.nvrtcGetErrorString(result), spec.label(), spec.canonical(), spec.arch, out.log,
                            rendered.source));
  }

  const char* lowered = nullptr;
  nvrtc::check(api.nvrtcGetLoweredName(program.get(), rendered.name_expression.c_str(), &lowered), "nvrtcGetLoweredName");
  out.lowered_name = lowered;
  std::size_t cubin_size = 0;
  nvrtc::check(api.nvrtcGetCUBINSize(program.get(), &cubin_size), "nvrtcGetCUBINSize");
  out.cubin.resize(cubin_size);
  nvrtc::check(api.nvrtcGetCUBIN(program.get(), out.cubin.data()), "nvrtcGetCUBIN");
  out.report = parse_ptxas_report(out.log);
  return out;
}

}  // namespace dilatron::codegen
