// A kernel compiled for the host (codegen::compile_for_host), loaded and ready to launch on the emulated
// device.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "emulator/launch.hpp"

namespace dilatron {
class DynamicLibrary;
}

namespace dilatron::emulator {

class EmulatedKernel {
 public:
  // Loads the object's bytes; throws dilatron::Error when they do not load or lack the entry. The label
  // the object carries, if any, replaces `label`.
  EmulatedKernel(const std::vector<char>& object, std::string label);
  ~EmulatedKernel();
  EmulatedKernel(EmulatedKernel&&) noexcept;

  // `args` is the kernel's parameter block (an args:: struct).
  void launch(const void* args, LaunchShape shape, LaunchOptions options = {}) const;
  const std::string& label() const noexcept { return label_; }

 private:
  std::unique_ptr<DynamicLibrary> library_;
  KernelEntry entry_ = nullptr;
  std::string label_;
};

}  // namespace dilatron::emulator
