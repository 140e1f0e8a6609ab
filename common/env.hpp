// Settings from environment variables, parsed strictly: a value that is not exactly what the variable
// takes is an error naming the variable and quoting the value, never a silent default or a wrapped number.
#pragma once

#include <cstdint>
#include <string_view>

namespace dilatron::env {

// The variable's text; empty when it is unset.
std::string_view text(const char* name);

// Decimal digits only (no sign, space or exponent), optionally followed by K, M or G (powers of 1024)
// when `suffixes`; the result must lie in [min, max]. Throws dilatron::Error.
std::uint64_t parse_count(const char* name, std::string_view value, std::uint64_t min, std::uint64_t max,
                          bool suffixes = false);

// "" or "0": false, "1": true; anything else throws dilatron::Error.
bool parse_switch(const char* name, std::string_view value);

// DILATRON_DEVICE, read once: "" or "gpu" runs kernels on the GPU through libcuda, "emulator" on the
// emulated device (docs/EMULATOR.md), which the driver table and the JIT then both use. Anything else
// throws dilatron::Error.
bool emulated_device();

// Makes emulated_device() true for the rest of the process whatever DILATRON_DEVICE says: the CLI's
// `--device emulator`, called before the first driver call or kernel compile.
void select_emulated_device();

// DILATRON_EMULATOR_PROFILE, read once: whether the emulated device counts bank conflicts and prints them
// at exit (docs/EMULATOR.md). Throws dilatron::Error for a value parse_switch refuses.
bool emulator_profile();

}  // namespace dilatron::env
