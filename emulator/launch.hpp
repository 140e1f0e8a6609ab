// Running one kernel grid on the emulated device. Each CUDA thread is a fiber, scheduled cooperatively
// within its CTA: __syncthreads waits for every thread of the CTA, a warp-collective instruction for
// all 32 lanes of the warp, which then see each other's operands as the PTX ISA defines. CTAs run on a
// pool of host threads. What a GPU would leave undefined is an error instead, naming the kernel, block
// and thread: threads meeting at different barriers or collectives (or some exited), shared accesses out
// of bounds, a read of cp.async bytes before the wait_group covering them (they read as 0xff bytes, a
// NaN in f16 and bf16, until then).
#pragma once

#include <array>
#include <cstddef>
#include <string>

#include "templates/dilatron/emulator_api.cuh"

namespace dilatron::emulator {

struct LaunchShape {
  std::array<unsigned, 3> grid{1, 1, 1}, block{1, 1, 1};
  std::size_t shared_bytes = 0;  // dynamic shared memory of each CTA
};

struct LaunchOptions {
  std::string label = "kernel";  // names the kernel in errors
  int host_threads = 0;          // CTAs in parallel; 0: one per core
};

// An emulated kernel: the instantiation called with its parameter block.
using KernelEntry = void (*)(const void* args);

// The table every emulated object's `dilatron_emulator_api` points to.
const DilatronEmulatorApi& api_table();

// For memcheck's report from a signal handler: "KERNEL: block (x, y, z) thread (x, y, z)" of the CUDA
// thread running on this host thread, written into `text`; false outside a launch.
bool describe_running_thread(char* text, std::size_t size) noexcept;

// Runs the grid to completion. Throws dilatron::Error for a bad shape or the first hazard found.
void launch(KernelEntry entry, const void* args, const LaunchShape& shape, const LaunchOptions& options = {});

}  // namespace dilatron::emulator
