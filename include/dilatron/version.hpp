#pragma once

namespace dilatron {

// Part of every kernel cache key: a new release never loads binaries built by another.
inline constexpr const char* kVersion = "0.1.0";

}  // namespace dilatron
