// Text forms of the public enums, shared by the API, the C ABI and the CLI.
#include <dilatron/config.hpp>
#include <dilatron/error.hpp>
#include <dilatron/tensor.hpp>

#include <string>

namespace dilatron {

std::string_view to_string(Mode mode) noexcept { return mode == Mode::longnet ? "longnet" : "head_groups"; }

Mode parse_mode(std::string_view text) {
  if (text == "longnet") return Mode::longnet;
  if (text == "head_groups") return Mode::head_groups;
  throw Error("unknown mode '" + std::string(text) + "': expected longnet or head_groups");
}

std::size_t dtype_size(DType dtype) noexcept { return dtype == DType::f64 ? 8 : dtype == DType::f32 ? 4 : 2; }

std::string_view to_string(DType dtype) noexcept {
  switch (dtype) {
    case DType::f32: return "f32";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
    case DType::f64: return "f64";
  }
  return "?";
}

DType parse_dtype(std::string_view text) {
  if (text == "f32" || text == "float32") return DType::f32;
  if (text == "f16" || text == "fp16" || text == "float16") return DType::f16;
  if (text == "bf16" || text == "bfloat16") return DType::bf16;
  if (text == "f64" || text == "float64") return DType::f64;
  throw Error("unknown dtype '" + std::string(text) + "': expected f32, f16, bf16 or f64");
}

}  // namespace dilatron
