// The GPU transports on a real device: the Local communicator moving bytes between logical ranks on
// one GPU (one thread per rank), its timeout, and NCCL with a world of one (a rank never sends to
// itself, so that is init, empty groups, the async form and teardown). Skipped without a GPU.
#include <gtest/gtest.h>

#include <dilatron/error.hpp>

#include <random>
#include <thread>

#include "common/env.hpp"
#include "runtime/device_buffer.hpp"
#include "runtime/driver.hpp"
#include "runtime/ring/device_sync.hpp"
#include "runtime/ring/local_communicator.hpp"
#include "runtime/ring/nccl.hpp"
#include "runtime/ring/nccl_bootstrap.hpp"
#include "runtime/ring/nccl_communicator.hpp"
#include "tests/support/temp_dir.hpp"

using namespace dilatron;
using namespace dilatron::ring;
using std::chrono::milliseconds;

namespace {

class RingTransports : public ::testing::Test {
 protected:
  void SetUp() override {
    const driver::Status status = driver::probe();
    if (status.devices.empty()) GTEST_SKIP() << "no GPU: " << status.problem;
    driver::current_context();
  }
};

std::span<std::byte> span_of(const DeviceBuffer& buffer) {
  return {static_cast<std::byte*>(buffer.get()), buffer.bytes()};
}

std::vector<std::string> on_threads(int ranks, const std::function<void(int)>& body) {
  std::vector<std::string> errors(static_cast<std::size_t>(ranks));
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r) {
    threads.emplace_back([&, r] {
      try {
        body(r);
      } catch (const std::exception& e) {
        errors[std::size_t(r)] = e.what();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  return errors;
}

}  // namespace

// Like the ring passing K/V blocks along: in step 1 each rank sends its own block to the next rank, in
// every later step it forwards the block it received in the step before, so after P - 1 steps every
// rank has held every other rank's block, each copy reading what the previous copy wrote.
TEST_F(RingTransports, LocalPassesBlocksAroundFourRanks) {
  constexpr int kRanks = 4;
  std::mt19937_64 rng(11);
  const auto ranks = LocalCommunicator::group(kRanks, milliseconds(60'000));
  for (int pass = 0; pass < 2; ++pass) {
    const std::size_t bytes = 4096 + 1000 * std::size_t(pass) + 3;  // not a multiple of anything useful
    std::vector<std::vector<std::byte>> blocks(kRanks, std::vector<std::byte>(bytes));
    std::vector<std::unique_ptr<DeviceBuffer>> slots;  // per rank: its own block, then one per step
    for (int r = 0; r < kRanks; ++r) {
      for (std::byte& b : blocks[std::size_t(r)]) b = std::byte(rng());
      for (int s = 0; s < kRanks; ++s) {
        slots.push_back(std::make_unique<DeviceBuffer>(bytes));
        const std::vector<std::byte> poison(bytes, std::byte{0xee});
        slots.back()->upload(s == 0 ? blocks[std::size_t(r)].data() : poison.data());
      }
    }
    const auto slot = [&](int rank, int step) -> DeviceBuffer& { return *slots[std::size_t(rank * kRanks + step)]; };
    const auto errors = on_threads(kRanks, [&](int rank) {
      for (int step = 1; step < kRanks; ++step) {
        const Message sends[] = {{(rank + 1) % kRanks, span_of(slot(rank, step - 1))}};
        const Message receives[] = {{(rank + kRanks - 1) % kRanks, span_of(slot(rank, step))}};
        ranks[std::size_t(rank)]->exchange(step, sends, receives);
      }
    });
    for (const std::string& e : errors) EXPECT_EQ(e, "");
    for (int rank = 0; rank < kRanks; ++rank) {
      for (int step = 0; step < kRanks; ++step) {
        std::vector<std::byte> got(bytes);
        slot(rank, step).download(got.data());
        EXPECT_EQ(got, blocks[std::size_t((rank - step + kRanks) % kRanks)]) << "rank " << rank << " step " << step;
      }
    }
  }
}

TEST_F(RingTransports, LocalRankThatNeverComesIsATimeout) {
  const auto ranks = LocalCommunicator::group(3, milliseconds(300));
  DeviceBuffer a(256), b(256);
  const auto errors = on_threads(2, [&](int rank) {
    const Message one[] = {{1 - rank, span_of(rank == 0 ? a : b)}};
    const Message from_two[] = {{2, span_of(rank == 0 ? b : a)}};
    // Rank 0 sends to 1 and waits for rank 2, which never calls. Rank 1 comes later, so rank 0's timeout
    // (naming rank 2) ends the step before rank 1's own would (naming rank 0, which never confirms).
    if (rank == 0) ranks[0]->exchange(1, one, from_two);
    if (rank == 1) {
      std::this_thread::sleep_for(milliseconds(150));
      ranks[1]->exchange(1, {}, one);
    }
  });
  for (const std::string& e : errors) {
    EXPECT_NE(e.find("ring step 1"), std::string::npos) << e;
    EXPECT_NE(e.find("rank 2"), std::string::npos) << e;
  }
}

TEST_F(RingTransports, NcclWorldOfOne) {
  if (!nccl::probe().loaded) GTEST_SKIP() << "no NCCL: " << nccl::probe().problem;
  // NCCL drives the GPU through the CUDA runtime, which the emulated device does not provide.
  if (env::emulated_device()) GTEST_SKIP() << "NCCL needs a real GPU; the emulated device has no CUDA runtime";
  ncclUniqueId id;
  DILATRON_NCCL(ncclGetUniqueId(&id));
  const auto owned = NcclCommunicator::create(id, 0, 1, milliseconds(30'000));
  EXPECT_EQ(owned->rank(), 0);
  EXPECT_EQ(owned->size(), 1);
  owned->exchange(1, {}, {});
  ring::Stream compute;
  owned->enqueue(2, {}, {}, compute.get());
  owned->make_wait(compute.get());
  owned->wait();
  EXPECT_TRUE(finished(compute.get()));
  DeviceBuffer buffer(64);
  const Message self[] = {{0, span_of(buffer)}};
  EXPECT_THROW(owned->exchange(3, self, {}), Error) << "a rank never sends to itself";
  owned->exchange(4, {}, {});  // refused messages leave the communicator working

  ncclComm_t theirs = nullptr;  // the caller's communicator: used, never destroyed here
  DILATRON_NCCL(ncclGetUniqueId(&id));
  DILATRON_NCCL(ncclCommInitRank(&theirs, 1, id, 0));
  {
    NcclCommunicator borrowed(theirs);
    borrowed.exchange(1, {}, {});
  }
  DILATRON_NCCL(ncclCommDestroy(theirs));

  test::TempDir dir;
  const auto booted = bootstrap_from_file(dir / "nccl.id", 0, 1);
  booted->exchange(1, {}, {});
  EXPECT_TRUE(std::filesystem::exists(dir / "nccl.id"));
}
