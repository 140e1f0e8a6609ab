#include "emulator/memcheck.hpp"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <iterator>
#include <map>
#include <mutex>

#include "emulator/launch.hpp"

namespace dilatron::emulator::memcheck {
namespace {

constexpr std::size_t kAlignment = 256;  // cuMemAlloc's
constexpr std::size_t kQuarantine = 1024;

struct Region {
  std::uintptr_t start;
  std::size_t bytes, map_bytes;
  bool freed = false;
};

// Every mapping, live or quarantined, by the address it begins at.
struct Registry {
  std::mutex mutex;
  std::map<std::uintptr_t, Region> by_map;
  std::map<std::uintptr_t, std::uintptr_t> map_of;  // live start -> map
  std::deque<std::uintptr_t> quarantine;            // maps of freed regions, oldest first
};
Registry& registry() {
  static auto* r = new Registry;  // never destroyed: a late free from a static destructor still finds it
  return *r;
}

std::size_t page() {
  static const std::size_t size = std::size_t(sysconf(_SC_PAGESIZE));
  return size;
}

struct sigaction previous;

// What `address` is, for the report; needs the registry, which the faulting thread may hold.
void describe(std::uintptr_t address, char* text, std::size_t size, bool& ours) {
  ours = address < page();
  if (ours) {
    std::snprintf(text, size, "a null pointer (address 0x%zx)", std::size_t(address));
    return;
  }
  Registry& r = registry();
  std::unique_lock lock(r.mutex, std::try_to_lock);
  if (!lock.owns_lock()) {
    std::snprintf(text, size, "address 0x%zx", std::size_t(address));
    return;
  }
  auto it = r.by_map.upper_bound(address);
  if (it == r.by_map.begin() || address >= std::prev(it)->first + std::prev(it)->second.map_bytes) {
    std::snprintf(text, size, "address 0x%zx, which is in no device allocation", std::size_t(address));
    return;
  }
  ours = true;
  const Region& region = std::prev(it)->second;
  if (region.freed) {
    std::snprintf(text, size, "address 0x%zx, inside the %zu-byte allocation at 0x%zx, which was freed",
                  std::size_t(address), region.bytes, std::size_t(region.start));
  } else if (address >= region.start) {
    std::snprintf(text, size, "address 0x%zx, %zu bytes past the end of the %zu-byte allocation at 0x%zx",
                  std::size_t(address), std::size_t(address - region.start - region.bytes), region.bytes,
                  std::size_t(region.start));
  } else {
    std::snprintf(text, size, "address 0x%zx, %zu bytes before the %zu-byte allocation at 0x%zx", std::size_t(address),
                  std::size_t(region.start - address), region.bytes, std::size_t(region.start));
  }
}

void on_fault(int, siginfo_t* info, void*) {
  char where[512] = "host code (not a kernel)", what[512];
  const bool in_kernel = describe_running_thread(where, sizeof where);
  bool ours = false;
  describe(std::uintptr_t(info->si_addr), what, sizeof what, ours);
  if (!in_kernel && !ours) {
    sigaction(SIGSEGV, &previous, nullptr);  // not the emulator's: the fault repeats under the old handler
    return;
  }
  char line[1200];
  const int n = std::snprintf(line, sizeof line, "dilatron: emulator: memcheck: %s accesses %s\n", where, what);
  if (n > 0) (void)!::write(STDERR_FILENO, line, std::min(std::size_t(n), sizeof line - 1));
  std::abort();
}

void install_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction action {};
    action.sa_sigaction = on_fault;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    sigaction(SIGSEGV, &action, &previous);
  });
}

}  // namespace

void* allocate(std::size_t bytes) {
  install_handler();
  const std::size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  const std::size_t map_bytes = (rounded + page() - 1) / page() * page() + page();  // and the guard page
  void* map = mmap(nullptr, map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (map == MAP_FAILED) return nullptr;
  const auto base = std::uintptr_t(map);
  mprotect(reinterpret_cast<void*>(base + map_bytes - page()), page(), PROT_NONE);
  const std::uintptr_t start = base + map_bytes - page() - rounded;
  std::memset(reinterpret_cast<void*>(start), 0xff, rounded);
  Registry& r = registry();
  const std::lock_guard lock(r.mutex);
  r.by_map[base] = Region{start, bytes, map_bytes};
  r.map_of[start] = base;
  return reinterpret_cast<void*>(start);
}

bool release(void* pointer) {
  Registry& r = registry();
  const std::lock_guard lock(r.mutex);
  const auto it = r.map_of.find(std::uintptr_t(pointer));
  if (it == r.map_of.end()) return false;
  const std::uintptr_t base = it->second;
  r.map_of.erase(it);
  Region& region = r.by_map.at(base);
  region.freed = true;
  mprotect(reinterpret_cast<void*>(base), region.map_bytes, PROT_NONE);
  madvise(reinterpret_cast<void*>(base), region.map_bytes, MADV_DONTNEED);
  r.quarantine.push_back(base);
  if (r.quarantine.size() > kQuarantine) {
    const std::uintptr_t oldest = r.quarantine.front();
    r.quarantine.pop_front();
    munmap(reinterpret_cast<void*>(oldest), r.by_map.at(oldest).map_bytes);
    r.by_map.erase(oldest);
  }
  return true;
}

std::size_t size_of(const void* pointer) {
  Registry& r = registry();
  const std::lock_guard lock(r.mutex);
  const auto it = r.map_of.find(std::uintptr_t(pointer));
  return it == r.map_of.end() ? 0 : r.by_map.at(it->second).bytes;
}

bool is_live(const void* pointer) {
  Registry& r = registry();
  const std::lock_guard lock(r.mutex);
  const auto address = std::uintptr_t(pointer);
  auto it = r.by_map.upper_bound(address);
  if (it == r.by_map.begin()) return false;
  const Region& region = (--it)->second;
  return !region.freed && address >= region.start && address < region.start + region.bytes;
}

}  // namespace dilatron::emulator::memcheck
