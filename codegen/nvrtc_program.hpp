// One NVRTC program (a translation unit with the embedded templates as headers), destroyed on every
// exit path, and its checked outputs.
#pragma once

#include <nvrtc.h>

#include <string>
#include <vector>

namespace dilatron::nvrtc {

struct Compilation {
  nvrtcResult result;
  std::string log;  // read whatever the result: for a failure it is the diagnosis
  double ms;
};

class Program {
 public:
  // Throws dilatron::Error without NVRTC.
  explicit Program(const std::string& source);
  ~Program();
  Program(const Program&) = delete;
  Program& operator=(const Program&) = delete;

  void add_name_expression(const std::string& expression);
  // Compilation failure is in the result, not thrown, so the caller can still report the log.
  Compilation compile(const std::vector<std::string>& options);
  std::string lowered_name(const std::string& expression) const;
  std::vector<char> cubin() const;  // after compiling for a real sm_ architecture
  std::string ptx() const;          // after compiling for a virtual compute_ architecture

 private:
  nvrtcProgram program_ = nullptr;
};

}  // namespace dilatron::nvrtc
