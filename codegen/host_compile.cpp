#include "codegen/host_compile.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>

#include "codegen/render.hpp"
#include "codegen/templates.hpp"

extern char** environ;

namespace dilatron::codegen {
namespace {

namespace fs = std::filesystem;

std::string compiler() {
  const char* cxx = std::getenv("CXX");
  return cxx && *cxx ? cxx : "c++";
}

// Runs `words` (no shell), output to `log`; returns the exit status, or -1 when it could not start.
int run(const std::vector<std::string>& words, const fs::path& log) {
  std::vector<char*> argv;
  for (const std::string& w : words) argv.push_back(const_cast<char*>(w.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = 0;
  const int started = posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (started != 0) return -1;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A private directory for one compile, removed with everything in it.
struct ScratchDir {
  fs::path path;
  ScratchDir() {
    std::string pattern = (fs::temp_directory_path() / "dilatron-host-XXXXXX").string();
    if (!mkdtemp(pattern.data())) throw Error(fmt::format("emulator: cannot create a directory in {}", fs::temp_directory_path().string()));
    path = pattern;
  }
  ~ScratchDir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
};

}  // namespace

std::string host_unit(const std::string& source, const std::string& name_expression, const std::string& label) {
  std::string quoted;
  for (const char c : label.empty() ? name_expression : label) {
    if (c == '"' || c == '\\') quoted += '\\';
    quoted += c;
  }
  return expand_includes(fmt::format(
      "#include \"dilatron/host_prelude.cuh\"\n{}\n"
      "namespace {{\ntemplate <class Args>\nvoid dilatron_call(void (*kernel)(Args), const void* args) {{ "
      "kernel(*static_cast<const Args*>(args)); }}\n}}  // namespace\n"
      "extern \"C\" __attribute__((visibility(\"default\"))) void {}(const void* args) {{ dilatron_call(&{}, args); }}\n"
      "extern \"C\" __attribute__((visibility(\"default\"))) const char {}[] = \"{}\";\n",
      source, kEmulatedEntry, name_expression, kEmulatedLabel, quoted));
}

std::string host_source(const KernelSpec& spec) {
  const RenderedKernel k = render(spec);
  return host_unit(k.source, k.name_expression, spec.label());
}

std::vector<std::string> host_compile_command() {
  // -fno-strict-aliasing: the kernels store 16-bit pairs through 32-bit pointers, as CUDA allows.
  return {compiler(), "-std=c++20", "-O1", "-fPIC", "-shared", "-fno-strict-aliasing", "-w", "-x", "c++"};
}

const std::string& host_compiler_version() {
  static const std::string version = [] {
    ScratchDir dir;
    if (run({compiler(), "--version"}, dir.path / "version") != 0) return std::string("unknown");
    const std::string text = slurp(dir.path / "version");
    return text.substr(0, text.find('\n'));
  }();
  return version;
}

HostObject compile_for_host(const KernelSpec& spec) { return compile_host_unit(host_source(spec), spec.label()); }

HostObject compile_host_unit(const std::string& unit, const std::string& label) {
  const auto start = std::chrono::steady_clock::now();
  ScratchDir dir;
  const fs::path source = dir.path / "kernel.cpp", object = dir.path / "kernel.so", log = dir.path / "log";
  std::ofstream(source, std::ios::binary) << unit;
  std::vector<std::string> words = host_compile_command();
  words.insert(words.end(), {source.string(), "-o", object.string()});
  const int status = run(words, log);
  HostObject out;
  out.log = slurp(log);
  if (status != 0) {
    throw Error(fmt::format("emulator: compiling {} for the host failed ({}, status {}):\n{}", label,
                            fmt::join(host_compile_command(), " "), status, out.log));
  }
  const std::string bytes = slurp(object);
  out.object.assign(bytes.begin(), bytes.end());
  out.compile_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return out;
}

}  // namespace dilatron::codegen
