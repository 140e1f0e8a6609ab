#include "runtime/ring/nccl_bootstrap.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>

#include <charconv>
#include <cstdlib>
#include <optional>
#include <vector>

#include "common/atomic_file.hpp"
#include "common/file_io.hpp"
#include "common/log.hpp"
#include "runtime/driver.hpp"
#include "runtime/ring/nccl.hpp"

namespace dilatron::ring {
namespace {

using Getenv = std::function<const char*(const char*)>;

struct Launcher {
  const char* name;
  const char* rank;
  const char* size;
  std::vector<const char*> local_rank;
};

const std::vector<Launcher>& launchers() {
  // torchrun first: it may run under srun or mpirun, whose variables then count its nodes, not its ranks.
  static const std::vector<Launcher> all = {
      {"torchrun", "RANK", "WORLD_SIZE", {"LOCAL_RANK"}},
      {"mpirun", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", {"OMPI_COMM_WORLD_LOCAL_RANK"}},
      {"PMI", "PMI_RANK", "PMI_SIZE", {"MPI_LOCALRANKID", "PMI_LOCAL_RANK"}},
      {"srun", "SLURM_PROCID", "SLURM_NTASKS", {"SLURM_LOCALID"}},
  };
  return all;
}

std::optional<int> integer(const Getenv& getenv, const char* name, int least) {
  const char* text = getenv(name);
  if (!text || !*text) return std::nullopt;
  const std::string_view view = text;
  int value = 0;
  const auto [end, error] = std::from_chars(view.data(), view.data() + view.size(), value);
  if (error != std::errc() || end != view.data() + view.size() || value < least) {
    throw Error(fmt::format("{}='{}': expected an integer >= {}", name, view, least));
  }
  return value;
}

constexpr std::string_view kIdHeader = "dilatron-nccl-id v1 size=";

}  // namespace

World world_from_environment(const Getenv& getenv) {
  for (const Launcher& l : launchers()) {
    const std::optional<int> rank = integer(getenv, l.rank, 0), size = integer(getenv, l.size, 1);
    if (!rank && !size) continue;
    if (!rank || !size) {
      throw Error(fmt::format("{} is set but {} is not: the {} environment is incomplete", rank ? l.rank : l.size,
                              rank ? l.size : l.rank, l.name));
    }
    if (*rank >= *size) throw Error(fmt::format("{}={} is not below {}={}", l.rank, *rank, l.size, *size));
    World world{*rank, *size, -1, fmt::format("{}: {}/{}", l.name, l.rank, l.size)};
    for (const char* name : l.local_rank) {
      if (const std::optional<int> local = integer(getenv, name, 0)) {
        world.local_rank = *local;
        break;
      }
    }
    return world;
  }
  throw Error(
      "no rank and world size in the environment: expected RANK and WORLD_SIZE (torchrun), OMPI_COMM_WORLD_RANK and "
      "OMPI_COMM_WORLD_SIZE (mpirun), PMI_RANK and PMI_SIZE, or SLURM_PROCID and SLURM_NTASKS (srun); start the "
      "program with such a launcher, or pass the rank and size to bootstrap_from_file");
}

World world_from_environment() {
  return world_from_environment([](const char* name) -> const char* { return std::getenv(name); });
}

void write_unique_id(const std::filesystem::path& path, const ncclUniqueId& id, int size) {
  std::string text = fmt::format("{}{}\n", kIdHeader, size);
  for (const char byte : id.internal) text += fmt::format("{:02x}", static_cast<unsigned char>(byte));
  text += '\n';
  AtomicFile file(path, 0600);
  file.write(text.data(), text.size());
  file.commit();
}

ncclUniqueId read_unique_id(const std::filesystem::path& path, int size, std::chrono::milliseconds timeout) {
  std::error_code ec;
  // A file system shared between nodes answers slowly; checking 20 times a second is plenty.
  if (!poll_until([&] { return std::filesystem::exists(path, ec); }, timeout, std::chrono::milliseconds(50))) {
    throw Error(fmt::format("waited {:g} s for rank 0 to publish the NCCL id in {} (DILATRON_RING_TIMEOUT_S sets the "
                            "limit): has rank 0 started, and do both see the same file system?",
                            double(timeout.count()) / 1000, path.string()));
  }
  const std::string text = read_file(path);
  const std::string expected = fmt::format("{}{}\n", kIdHeader, size);
  const std::size_t hex_digits = 2 * sizeof(ncclUniqueId::internal);
  if (!text.starts_with(kIdHeader)) throw Error(fmt::format("{} is not a dilatron NCCL id file", path.string()));
  if (!text.starts_with(expected)) {
    throw Error(fmt::format("{} was written for another world size ('{}'), this rank has size={}", path.string(),
                            text.substr(0, text.find('\n')), size));
  }
  if (text.size() != expected.size() + hex_digits + 1 || text.back() != '\n') {
    throw Error(fmt::format("{} is damaged: expected {} hex digits after its first line", path.string(), hex_digits));
  }
  ncclUniqueId id{};
  for (std::size_t i = 0; i < sizeof id.internal; ++i) {
    unsigned value = 0;
    const char* digits = text.data() + expected.size() + 2 * i;
    const auto [end, error] = std::from_chars(digits, digits + 2, value, 16);
    if (error != std::errc() || end != digits + 2) {
      throw Error(fmt::format("{} is damaged: '{}' is not a hex byte", path.string(), std::string_view(digits, 2)));
    }
    id.internal[i] = static_cast<char>(value);
  }
  return id;
}

std::unique_ptr<NcclCommunicator> bootstrap_from_file(const std::filesystem::path& path, int rank, int size) {
  if (size < 1 || rank < 0 || rank >= size) throw Error(fmt::format("NCCL rank {} of {}: needs 0 <= rank < size", rank, size));
  ncclUniqueId id{};
  if (rank == 0) {
    DILATRON_NCCL(ncclGetUniqueId(&id));
    write_unique_id(path, id, size);
  } else {
    id = read_unique_id(path, size, ring_timeout());
  }
  return NcclCommunicator::create(id, rank, size);
}

std::unique_ptr<NcclCommunicator> bootstrap_from_environment(const std::filesystem::path& path) {
  const World world = world_from_environment();
  log::write(log::Level::info, "NCCL rank {} of {} (from {}), id file {}", world.rank, world.size, world.source,
             path.string());
  CUcontext current = nullptr;
  DILATRON_CU(cuCtxGetCurrent(&current));
  if (!current) {
    int count = 0;
    DILATRON_CU(cuDeviceGetCount(&count));
    if (count < 1) throw Error("bootstrap_from_environment: the driver reports no GPUs", ErrorKind::cuda);
    CUdevice device = 0;
    DILATRON_CU(cuDeviceGet(&device, (world.local_rank >= 0 ? world.local_rank : world.rank) % count));
    DILATRON_CU(cuDevicePrimaryCtxRetain(&current, device));
    DILATRON_CU(cuCtxSetCurrent(current));
  }
  return bootstrap_from_file(path, world.rank, world.size);
}

}  // namespace dilatron::ring
