// The emulator's memcheck for global memory. Emulated device memory is host memory laid out so that a
// kernel's bad access faults at once: each allocation ends where an inaccessible guard page begins (its
// size rounded up to cuMemAlloc's 256-byte alignment, so an overrun inside that rounding goes unseen),
// freed allocations stay inaccessible for the next 1024 frees, and null is never mapped. The fault is
// reported on stderr with the kernel, block and thread that made it and what the address is (past the
// end of an allocation, in a freed one), then the process aborts: like an illegal address on a GPU,
// which leaves the context unusable, nothing after it could be trusted.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dilatron::emulator::memcheck {

// Memory of `bytes` (> 0) filled with 0xff bytes, a NaN in every float type (initcheck: a read of what
// nobody wrote carries NaN into the output). Null when the host has no memory for it.
void* allocate(std::size_t bytes);
// Whether `pointer` is an allocation's start; if so its memory becomes inaccessible.
bool release(void* pointer);
// The bytes of the allocation starting at `pointer`, or 0.
std::size_t size_of(const void* pointer);
// Whether `pointer` lies inside a live allocation (anywhere in it, as a tensor view's data may).
bool is_live(const void* pointer);

}  // namespace dilatron::emulator::memcheck
