#include "emulator/emulated_kernel.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "codegen/host_compile.hpp"
#include "common/dynlib.hpp"

namespace dilatron::emulator {

EmulatedKernel::EmulatedKernel(const std::vector<char>& object, std::string label) : label_(std::move(label)) {
  // dlopen needs a file: a private one, unlinked once loaded (the mapping stays).
  std::string path = (std::filesystem::temp_directory_path() / "dilatron-emulated-XXXXXX.so").string();
  const int fd = mkstemps(path.data(), 3);
  if (fd < 0) throw Error(fmt::format("emulator: {}: cannot create a file to load the kernel from", label_));
  const bool written = ::write(fd, object.data(), object.size()) == ssize_t(object.size());
  ::close(fd);
  if (written) library_ = std::make_unique<DynamicLibrary>(std::vector<std::string>{path});
  std::filesystem::remove(path);
  if (!written || !library_->loaded()) {
    throw Error(fmt::format("emulator: {}: the compiled kernel does not load: {}", label_,
                            written ? library_->error() : "cannot write it"));
  }
  auto* api = static_cast<const DilatronEmulatorApi**>(library_->symbol(codegen::kEmulatedApi));
  entry_ = reinterpret_cast<KernelEntry>(library_->symbol(codegen::kEmulatedEntry));
  if (!api || !entry_) throw Error(fmt::format("emulator: {}: the object lacks {} or {}", label_, codegen::kEmulatedApi,
                                               codegen::kEmulatedEntry));
  *api = &api_table();
  if (const auto* label = static_cast<const char*>(library_->symbol(codegen::kEmulatedLabel))) label_ = label;
}

EmulatedKernel::~EmulatedKernel() = default;
EmulatedKernel::EmulatedKernel(EmulatedKernel&&) noexcept = default;

void EmulatedKernel::launch(const void* args, LaunchShape shape, LaunchOptions options) const {
  options.label = label_;
  emulator::launch(entry_, args, shape, options);
}

}  // namespace dilatron::emulator
