#include "codegen/nvrtc_program.hpp"

#include <chrono>

#include "codegen/nvrtc.hpp"
#include "codegen/templates.hpp"

namespace dilatron::nvrtc {

Program::Program(const std::string& source) {
  std::vector<std::string> names, texts;  // NVRTC wants NUL-terminated strings
  for (const codegen::TemplateFile& f : codegen::template_files()) {
    names.emplace_back(f.name);
    texts.emplace_back(f.text);
  }
  std::vector<const char*> name_ptrs, text_ptrs;
  for (std::size_t i = 0; i < names.size(); ++i) {
    name_ptrs.push_back(names[i].c_str());
    text_ptrs.push_back(texts[i].c_str());
  }
  check(api().nvrtcCreateProgram(&program_, source.c_str(), "dilatron_kernel.cu", int(names.size()), text_ptrs.data(),
                                 name_ptrs.data()),
        "nvrtcCreateProgram");
}

Program::~Program() { api().nvrtcDestroyProgram(&program_); }

void Program::add_name_expression(const std::string& expression) {
  check(api().nvrtcAddNameExpression(program_, expression.c_str()), "nvrtcAddNameExpression");
}

Compilation Program::compile(const std::vector<std::string>& options) {
  std::vector<const char*> option_ptrs;
  for (const std::string& o : options) option_ptrs.push_back(o.c_str());
  const auto start = std::chrono::steady_clock::now();
  Compilation c{api().nvrtcCompileProgram(program_, int(option_ptrs.size()), option_ptrs.data()), {}, 0};
  c.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  std::size_t log_size = 0;
  check(api().nvrtcGetProgramLogSize(program_, &log_size), "nvrtcGetProgramLogSize");
  c.log.resize(log_size);
  check(api().nvrtcGetProgramLog(program_, c.log.data()), "nvrtcGetProgramLog");
  while (!c.log.empty() && (c.log.back() == '\0' || c.log.back() == '\n')) c.log.pop_back();
  return c;
}

std::string Program::lowered_name(const std::string& expression) const {
  const char* lowered = nullptr;
  check(api().nvrtcGetLoweredName(program_, expression.c_str(), &lowered), "nvrtcGetLoweredName");
  return lowered;
}

std::vector<char> Program::cubin() const {
  std::size_t size = 0;
  check(api().nvrtcGetCUBINSize(program_, &size), "nvrtcGetCUBINSize");
  std::vector<char> out(size);
  check(api().nvrtcGetCUBIN(program_, out.data()), "nvrtcGetCUBIN");
  return out;
}

std::string Program::ptx() const {
  std::size_t size = 0;
  check(api().nvrtcGetPTXSize(program_, &size), "nvrtcGetPTXSize");
  std::string out(size, '\0');
  check(api().nvrtcGetPTX(program_, out.data()), "nvrtcGetPTX");
  while (!out.empty() && out.back() == '\0') out.pop_back();
  return out;
}

}  // namespace dilatron::nvrtc
