// The NCCL bootstrap's CPU half: rank and size from the launchers' variables, and the id file rank 0
// publishes and the others wait for. ncclCommInitRank itself needs GPUs (communicators_gpu_test.cpp).
#include <gtest/gtest.h>

#include <dilatron/error.hpp>

#include <fstream>
#include <map>
#include <random>
#include <thread>

#include "runtime/ring/nccl_bootstrap.hpp"
#include "tests/support/temp_dir.hpp"

using namespace dilatron;
using namespace dilatron::ring;
using std::chrono::milliseconds;

namespace {

World world(const std::map<std::string, std::string>& variables) {
  return world_from_environment([&](const char* name) -> const char* {
    const auto it = variables.find(name);
    return it == variables.end() ? nullptr : it->second.c_str();
  });
}

std::string error_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

ncclUniqueId random_id(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  ncclUniqueId id;
  for (char& c : id.internal) c = char(rng());
  return id;
}

bool same(const ncclUniqueId& a, const ncclUniqueId& b) {
  return std::equal(std::begin(a.internal), std::end(a.internal), std::begin(b.internal));
}

}  // namespace

TEST(World, ReadsEachLauncherAndPrefersMpirun) {
  const World ompi = world({{"OMPI_COMM_WORLD_RANK", "3"}, {"OMPI_COMM_WORLD_SIZE", "8"},
                            {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}, {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}});
  EXPECT_EQ(ompi.rank, 3);
  EXPECT_EQ(ompi.size, 8);
  EXPECT_EQ(ompi.local_rank, 1);
  EXPECT_EQ(ompi.source, "mpirun: OMPI_COMM_WORLD_RANK/OMPI_COMM_WORLD_SIZE");

  const World pmi = world({{"PMI_RANK", "5"}, {"PMI_SIZE", "6"}, {"MPI_LOCALRANKID", "2"}});
  EXPECT_EQ(pmi.rank, 5);
  EXPECT_EQ(pmi.size, 6);
  EXPECT_EQ(pmi.local_rank, 2);

  const World slurm = world({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}});
  EXPECT_EQ(slurm.rank, 0);
  EXPECT_EQ(slurm.size, 1);
  EXPECT_EQ(slurm.local_rank, -1) << "the launcher did not say";
  EXPECT_EQ(slurm.source, "srun: SLURM_PROCID/SLURM_NTASKS");

  // torchrun's, before srun's: `srun torchrun` leaves SLURM_PROCID counting nodes.
  const World torchrun = world({{"RANK", "6"}, {"WORLD_SIZE", "8"}, {"LOCAL_RANK", "2"}, {"MASTER_ADDR", "node0"},
                                {"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "2"}});
  EXPECT_EQ(torchrun.rank, 6);
  EXPECT_EQ(torchrun.size, 8);
  EXPECT_EQ(torchrun.local_rank, 2);
  EXPECT_EQ(torchrun.source, "torchrun: RANK/WORLD_SIZE");
}

TEST(World, MissingOrBadVariablesAreClearErrors) {
  const std::string none = error_of([] { world({}); });
  for (const char* name : {"RANK and WORLD_SIZE (torchrun)", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_RANK",
                           "PMI_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "bootstrap_from_file"}) {
    EXPECT_NE(none.find(name), std::string::npos) << name << " in: " << none;
  }
  EXPECT_NE(error_of([] { world({{"PMI_RANK", "1"}}); }).find("PMI_RANK is set but PMI_SIZE is not"), std::string::npos);
  EXPECT_NE(error_of([] { world({{"RANK", "1"}, {"LOCAL_RANK", "1"}}); })
                .find("RANK is set but WORLD_SIZE is not: the torchrun environment is incomplete"),
            std::string::npos);
  EXPECT_NE(error_of([] { world({{"RANK", "4"}, {"WORLD_SIZE", "4"}}); }).find("RANK=4 is not below WORLD_SIZE=4"),
            std::string::npos);
  EXPECT_NE(error_of([] { world({{"SLURM_NTASKS", "4"}}); }).find("SLURM_NTASKS is set but SLURM_PROCID is not"),
            std::string::npos);
  for (const auto& [rank, size, needle] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"1x", "4", "SLURM_PROCID='1x'"},
           {"-1", "4", "SLURM_PROCID='-1'"},
           {"1", "0", "SLURM_NTASKS='0'"},
           {"1", "99999999999", "SLURM_NTASKS='99999999999'"},
           {"4", "4", "SLURM_PROCID=4 is not below SLURM_NTASKS=4"}}) {
    const std::string what = error_of([&] { world({{"SLURM_PROCID", rank}, {"SLURM_NTASKS", size}}); });
    EXPECT_NE(what.find(needle), std::string::npos) << what;
  }
  EXPECT_NE(error_of([] { world({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"SLURM_LOCALID", "x"}}); })
                .find("SLURM_LOCALID='x'"),
            std::string::npos);
}

TEST(World, BootstrapFromTheEnvironmentChecksItBeforeTouchingNcclOrTheGpu) {
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE", "SLURM_PROCID",
                           "SLURM_NTASKS"}) {
    ::unsetenv(name);
  }
  test::TempDir dir;
  const std::string what = error_of([&] { bootstrap_from_environment(dir / "nccl.id"); });
  EXPECT_NE(what.find("no rank and world size in the environment"), std::string::npos) << what;
  EXPECT_FALSE(std::filesystem::exists(dir / "nccl.id"));
  EXPECT_NE(error_of([&] { bootstrap_from_file(dir / "nccl.id", 2, 2); }).find("rank 2 of 2"), std::string::npos);
}

TEST(UniqueIdFile, RoundTripsAndIsPrivate) {
  test::TempDir dir;
  const ncclUniqueId id = random_id(7);
  write_unique_id(dir / "nccl.id", id, 4);
  EXPECT_EQ(std::filesystem::status(dir / "nccl.id").permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  EXPECT_TRUE(same(read_unique_id(dir / "nccl.id", 4, milliseconds(100)), id));
  write_unique_id(dir / "nccl.id", random_id(8), 4);  // a later run replaces it
  EXPECT_TRUE(same(read_unique_id(dir / "nccl.id", 4, milliseconds(100)), random_id(8)));
}

TEST(UniqueIdFile, OtherRanksWaitForRankZero) {
  test::TempDir dir;
  std::thread rank0([&] {
    std::this_thread::sleep_for(milliseconds(200));
    write_unique_id(dir / "nccl.id", random_id(9), 2);
  });
  const ncclUniqueId got = read_unique_id(dir / "nccl.id", 2, milliseconds(10'000));
  rank0.join();
  EXPECT_TRUE(same(got, random_id(9)));
}

TEST(UniqueIdFile, AMissingFileIsATimeoutNamingIt) {
  test::TempDir dir;
  const auto start = std::chrono::steady_clock::now();
  const std::string what = error_of([&] { read_unique_id(dir / "never.id", 2, milliseconds(300)); });
  const auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_GE(waited, milliseconds(300));
  EXPECT_LT(waited, milliseconds(3'000));
  EXPECT_NE(what.find((dir / "never.id").string()), std::string::npos) << what;
  EXPECT_NE(what.find("0.3 s"), std::string::npos) << what;
  EXPECT_NE(what.find("DILATRON_RING_TIMEOUT_S"), std::string::npos) << what;
}

TEST(UniqueIdFile, AnotherWorldSizeOrDamageIsRefused) {
  test::TempDir dir;
  write_unique_id(dir / "nccl.id", random_id(1), 4);
  EXPECT_NE(error_of([&] { read_unique_id(dir / "nccl.id", 8, milliseconds(100)); }).find("another world size"),
            std::string::npos);
  for (const std::string& text :
       {std::string("hello\n"), std::string("dilatron-nccl-id v1 size=4\n") + std::string(255, 'a') + "\n",
        std::string("dilatron-nccl-id v1 size=4\n") + std::string(254, 'a') + "zz\n"}) {
    std::ofstream(dir / "bad.id") << text;
    const std::string what = error_of([&] { read_unique_id(dir / "bad.id", 4, milliseconds(100)); });
    EXPECT_NE(what.find((dir / "bad.id").string()), std::string::npos) << what;
  }
}
