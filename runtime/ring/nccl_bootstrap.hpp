// Starting an NCCL ring without an MPI library: rank 0 publishes an ncclUniqueId in a file every rank
// can read (a shared file system for several nodes), the others wait for it, and all join with
// ncclCommInitRank. Rank and size come from the caller or from the variables mpirun and srun set.
//
// The file must be new for each run (put the job id in its name): rank 0 replaces an old one
// atomically, but a rank that starts first could read the old one and join a clique that never forms.
#pragma once

#include <nccl.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "runtime/ring/nccl_communicator.hpp"

namespace dilatron::ring {

struct World {
  int rank = 0, size = 1;
  int local_rank = -1;  // the rank among those on this node, -1 when the launcher does not say
  std::string source;   // which variables said so, for messages
};

// RANK/WORLD_SIZE (torchrun), else OMPI_COMM_WORLD_RANK/SIZE (Open MPI's mpirun), else PMI_RANK/SIZE
// (MPICH, Intel MPI, Slurm's PMI), else SLURM_PROCID/NTASKS (srun); the local rank from the same
// launcher (LOCAL_RANK, OMPI_COMM_WORLD_LOCAL_RANK, MPI_LOCALRANKID, SLURM_LOCALID). `source` names the
// launcher and its variables, e.g. "torchrun: RANK/WORLD_SIZE". Throws dilatron::Error when none is set, when only half of a pair
// is, or for a value that is not an integer in range. `getenv` is injectable for tests.
World world_from_environment(const std::function<const char*(const char*)>& getenv);
World world_from_environment();

// The file: one line "dilatron-nccl-id v1 size=<size>", then the id in hex. Written atomically.
void write_unique_id(const std::filesystem::path& path, const ncclUniqueId& id, int size);
// Waits up to `timeout` for the file to appear; throws dilatron::Error naming the file when it does
// not, or when it is damaged or written for another world size.
ncclUniqueId read_unique_id(const std::filesystem::path& path, int size, std::chrono::milliseconds timeout);

// Rank 0 creates and publishes the id; the others wait for it (DILATRON_RING_TIMEOUT_S); then every
// rank joins on the current context's device (device 0 when no context is current).
std::unique_ptr<NcclCommunicator> bootstrap_from_file(const std::filesystem::path& path, int rank, int size);
// Rank and size from world_from_environment(). Without a current context, it first makes the primary
// context of GPU (local rank, else rank) modulo the GPU count current, so the ranks of one node
// spread over its GPUs.
std::unique_ptr<NcclCommunicator> bootstrap_from_environment(const std::filesystem::path& path);

}  // namespace dilatron::ring
