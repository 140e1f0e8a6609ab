// The Local transport's rendezvous with host memory and one thread per rank: messages meet by (step,
// sender, receiver), bytes arrive intact, tokens flow both ways, and every failure (bad messages,
// sizes that differ, a rank that stalls, a copy that fails) is an error on every rank, never a hang.
#include <gtest/gtest.h>

#include <dilatron/error.hpp>

#include <atomic>
#include <cstring>
#include <random>
#include <thread>

#include "runtime/ring/rendezvous.hpp"

using namespace dilatron;
using namespace dilatron::ring;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

namespace {

// What every rank's thread ended with.
struct Outcome {
  std::string error;  // empty: it returned
  ErrorKind kind = ErrorKind::invalid;
  Clock::duration took{};
};

// Runs body(rank) on one thread per rank.
std::vector<Outcome> on_threads(int ranks, const std::function<void(int)>& body) {
  std::vector<Outcome> outcomes(std::size_t(ranks), Outcome{});
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r) {
    threads.emplace_back([&, r] {
      const Clock::time_point start = Clock::now();
      try {
        body(r);
      } catch (const Error& e) {
        outcomes[std::size_t(r)].error = e.what();
        outcomes[std::size_t(r)].kind = e.kind();
      }
      outcomes[std::size_t(r)].took = Clock::now() - start;
    });
  }
  for (std::thread& t : threads) t.join();
  return outcomes;
}

// Host copies; the tokens are addresses of per-rank markers so each side can be checked.
struct HostHooks {
  std::vector<int> ready_marks, receipt_marks;
  explicit HostHooks(int ranks) : ready_marks(std::size_t(ranks)), receipt_marks(std::size_t(ranks)) {}

  Rendezvous::Hooks for_rank(int rank, std::atomic<int>& bad_tokens) {
    Rendezvous::Hooks hooks;
    hooks.deliver = [this, rank, &bad_tokens](std::span<const std::byte> from, std::span<std::byte> to,
                                               Rendezvous::Token ready) {
      const auto sender = static_cast<int*>(ready) - ready_marks.data();
      if (sender < 0 || sender >= std::ptrdiff_t(ready_marks.size())) ++bad_tokens;
      std::memcpy(to.data(), from.data(), to.size());
      return static_cast<Rendezvous::Token>(&receipt_marks[std::size_t(rank)]);
    };
    hooks.delivered = [this, &bad_tokens](Rendezvous::Token receipt) {
      const auto receiver = static_cast<int*>(receipt) - receipt_marks.data();
      if (receiver < 0 || receiver >= std::ptrdiff_t(receipt_marks.size())) ++bad_tokens;
    };
    return hooks;
  }
  Rendezvous::Token ready(int rank) { return &ready_marks[std::size_t(rank)]; }
};

std::vector<std::byte> pattern(int step, int from, int to, std::size_t bytes, int pass) {
  std::mt19937 rng(unsigned(step * 1000 + from * 100 + to * 10 + pass));
  std::vector<std::byte> out(bytes);
  for (std::byte& b : out) b = std::byte(rng());
  return out;
}

Message message(int peer, std::vector<std::byte>& buffer) { return {peer, std::span<std::byte>(buffer)}; }

}  // namespace

TEST(Rendezvous, EveryRankSendsToEveryOtherOverManyStepsAndPasses) {
  constexpr int kRanks = 5, kSteps = 4, kPasses = 3;
  Rendezvous rendezvous(kRanks, milliseconds(20'000));
  HostHooks host(kRanks);
  std::atomic<int> bad_tokens{0}, wrong_bytes{0};
  // The ring's pattern: in step t rank i sends to i + t and receives from i - t; sizes differ per
  // pair and step, and step numbers start again in every pass (a second forward pass).
  const auto size_of = [](int step, int from) { return std::size_t(1 + (step * 37 + from * 11) % 300); };
  const auto outcomes = on_threads(kRanks, [&](int rank) {
    const Rendezvous::Hooks hooks = host.for_rank(rank, bad_tokens);
    for (int pass = 0; pass < kPasses; ++pass) {
      for (int step = 1; step <= kSteps; ++step) {
        const int to = (rank + step) % kRanks, from = (rank - step + kRanks) % kRanks;
        std::vector<std::byte> out = pattern(step, rank, to, size_of(step, rank), pass);
        std::vector<std::byte> in(size_of(step, from), std::byte{0x5a});
        const Message sends[] = {message(to, out)}, receives[] = {message(from, in)};
        rendezvous.exchange(rank, step, sends, receives, host.ready(rank), hooks);
        if (in != pattern(step, from, rank, in.size(), pass)) ++wrong_bytes;
      }
    }
  });
  for (const Outcome& o : outcomes) EXPECT_EQ(o.error, "");
  EXPECT_EQ(wrong_bytes, 0);
  EXPECT_EQ(bad_tokens, 0);
}

TEST(Rendezvous, AllToAllWithSeveralMessagesPerStep) {
  constexpr int kRanks = 4;
  Rendezvous rendezvous(kRanks, milliseconds(20'000));
  HostHooks host(kRanks);
  std::atomic<int> bad_tokens{0}, wrong_bytes{0};
  const auto outcomes = on_threads(kRanks, [&](int rank) {
    std::vector<std::vector<std::byte>> out, in;
    std::vector<Message> sends, receives;
    for (int peer = 0; peer < kRanks; ++peer) {
      if (peer == rank) continue;
      out.push_back(pattern(1, rank, peer, 64 + std::size_t(rank + peer), 0));
      in.emplace_back(64 + std::size_t(rank + peer));
    }
    for (std::size_t i = 0, peer = 0; peer < kRanks; ++peer) {
      if (int(peer) == rank) continue;
      sends.push_back(message(int(peer), out[i]));
      receives.push_back(message(int(peer), in[i]));
      ++i;
    }
    std::reverse(receives.begin(), receives.end());  // any order
    rendezvous.exchange(rank, 1, sends, receives, host.ready(rank), host.for_rank(rank, bad_tokens));
    for (const Message& r : receives) {
      const std::vector<std::byte> expected = pattern(1, r.peer, rank, r.data.size(), 0);
      if (!std::equal(r.data.begin(), r.data.end(), expected.begin())) ++wrong_bytes;
    }
  });
  for (const Outcome& o : outcomes) EXPECT_EQ(o.error, "");
  EXPECT_EQ(wrong_bytes, 0);
  EXPECT_EQ(bad_tokens, 0);
}

// A plan may move several blocks between two ranks in one step (two branches' spanning segments): they
// meet in the order both sides list them, whatever the sizes, beside another peer's message.
TEST(Rendezvous, SeveralMessagesBetweenTwoRanksInOneStepMeetInOrder) {
  constexpr int kRanks = 3;
  Rendezvous rendezvous(kRanks, milliseconds(20'000));
  HostHooks host(kRanks);
  std::atomic<int> bad_tokens{0}, wrong_bytes{0};
  const std::size_t sizes[] = {40, 8, 40, 24};  // two of one size: only the order tells them apart
  const auto outcomes = on_threads(kRanks, [&](int rank) {
    const Rendezvous::Hooks hooks = host.for_rank(rank, bad_tokens);
    std::vector<std::vector<std::byte>> buffers;
    std::vector<Message> sends, receives;
    for (int i = 0; i < 4; ++i) {
      if (rank == 0) buffers.push_back(pattern(1, 0, 1, sizes[i], i));
      if (rank == 1) buffers.emplace_back(sizes[i]);
    }
    if (rank == 2) buffers.push_back(pattern(1, 2, 1, 16, 9));
    if (rank == 1) buffers.emplace_back(16);
    for (int i = 0; i < 4 && rank != 2; ++i) (rank == 0 ? sends : receives).push_back(message(1 - rank, buffers[std::size_t(i)]));
    if (rank == 2) sends.push_back(message(1, buffers[0]));
    if (rank == 1) receives.insert(receives.begin() + 2, message(2, buffers[4]));  // another peer in between
    rendezvous.exchange(rank, 1, sends, receives, host.ready(rank), hooks);
    if (rank != 1) return;
    for (int i = 0; i < 4; ++i) wrong_bytes += buffers[std::size_t(i)] != pattern(1, 0, 1, sizes[i], i);
    wrong_bytes += buffers[4] != pattern(1, 2, 1, 16, 9);
  });
  for (const Outcome& o : outcomes) EXPECT_EQ(o.error, "");
  EXPECT_EQ(wrong_bytes, 0);
  EXPECT_EQ(bad_tokens, 0);
}

TEST(Rendezvous, SizesThatDifferFailEveryRankAtOnce) {
  Rendezvous rendezvous(2, milliseconds(20'000));
  HostHooks host(2);
  std::atomic<int> bad_tokens{0};
  const auto outcomes = on_threads(2, [&](int rank) {
    std::vector<std::byte> out(rank == 0 ? 100 : 8), in(8);
    const Message sends[] = {message(1 - rank, out)}, receives[] = {message(1 - rank, in)};
    rendezvous.exchange(rank, 3, sends, receives, host.ready(rank), host.for_rank(rank, bad_tokens));
  });
  for (const Outcome& o : outcomes) {
    EXPECT_NE(o.error.find("ring step 3: rank 0 sends 100 bytes to rank 1, which expects 8"), std::string::npos)
        << o.error;
    EXPECT_EQ(o.kind, ErrorKind::invalid) << "a broken schedule";
    EXPECT_LT(o.took, milliseconds(5'000)) << "not a timeout";
  }
}

TEST(Rendezvous, AStalledPeerIsATimeoutNamingTheStepAndThePeer) {
  constexpr int kRanks = 3;
  Rendezvous rendezvous(kRanks, milliseconds(300));
  HostHooks host(kRanks);
  std::atomic<int> bad_tokens{0};
  // Step 2 of a ring of 3: rank i sends to i + 1 and receives from i - 1; rank 2 never arrives.
  const auto outcomes = on_threads(kRanks, [&](int rank) {
    if (rank == 2) return;
    std::vector<std::byte> out(32), in(32);
    const Message sends[] = {message((rank + 1) % kRanks, out)}, receives[] = {message((rank + 2) % kRanks, in)};
    rendezvous.exchange(rank, 2, sends, receives, host.ready(rank), host.for_rank(rank, bad_tokens));
  });
  // Rank 0 waits for rank 2's message; rank 1's message is never taken by rank 2. The first to time
  // out fails the group, so both report the same reason.
  for (int rank : {0, 1}) {
    const Outcome& o = outcomes[std::size_t(rank)];
    EXPECT_NE(o.error.find("ring step 2:"), std::string::npos) << o.error;
    EXPECT_NE(o.error.find("rank 2"), std::string::npos) << o.error;
    EXPECT_NE(o.error.find("within 0.3 s"), std::string::npos) << o.error;
    EXPECT_EQ(o.kind, ErrorKind::cuda) << "a transport failure";
    EXPECT_LT(o.took, milliseconds(3'000));
  }
  EXPECT_EQ(outcomes[0].error, outcomes[1].error);
  EXPECT_GE(std::max(outcomes[0].took, outcomes[1].took), milliseconds(300)) << "the one that timed out waited";
  // The group stays failed: a later step fails at once instead of waiting again.
  const Clock::time_point start = Clock::now();
  std::vector<std::byte> out(1);
  const Message sends[] = {message(1, out)};
  EXPECT_THROW(rendezvous.exchange(0, 3, sends, {}, nullptr, host.for_rank(0, bad_tokens)), Error);
  EXPECT_LT(Clock::now() - start, milliseconds(100));
}

TEST(Rendezvous, AReceiverThatNeverComesIsNamedBySender) {
  Rendezvous rendezvous(2, milliseconds(200));
  HostHooks host(2);
  std::atomic<int> bad_tokens{0};
  std::vector<std::byte> out(4);
  const Message sends[] = {message(1, out)};
  try {
    rendezvous.exchange(0, 5, sends, {}, host.ready(0), host.for_rank(0, bad_tokens));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ring step 5: rank 1 did not take rank 0's message within 0.2 s"),
              std::string::npos)
        << e.what();
  }
}

TEST(Rendezvous, AFailingCopyStopsEveryRankWithItsReason) {
  constexpr int kRanks = 4;
  Rendezvous rendezvous(kRanks, milliseconds(20'000));
  HostHooks host(kRanks);
  std::atomic<int> bad_tokens{0};
  const auto outcomes = on_threads(kRanks, [&](int rank) {
    Rendezvous::Hooks hooks = host.for_rank(rank, bad_tokens);
    if (rank == 2) {
      hooks.deliver = [](std::span<const std::byte>, std::span<std::byte>, Rendezvous::Token) -> Rendezvous::Token {
        throw Error("cuMemcpyDtoDAsync", 700, "injected failure");
      };
    }
    for (int step = 1; step < kRanks; ++step) {
      std::vector<std::byte> out(16), in(16);
      const Message sends[] = {message((rank + step) % kRanks, out)};
      const Message receives[] = {message((rank - step + kRanks) % kRanks, in)};
      rendezvous.exchange(rank, step, sends, receives, host.ready(rank), hooks);
    }
  });
  for (const Outcome& o : outcomes) {
    EXPECT_NE(o.error.find("ring step 1: rank 2 could not take the message from rank 1: cuMemcpyDtoDAsync failed "
                           "(700): injected failure"),
              std::string::npos)
        << o.error;
    EXPECT_LT(o.took, milliseconds(5'000)) << "not a timeout";
  }
}

TEST(Rendezvous, ASenderNeverLeavesWhileItsBufferIsBeingCopied) {
  Rendezvous rendezvous(3, milliseconds(20'000));
  HostHooks host(3);
  std::atomic<int> bad_tokens{0};
  std::atomic<bool> copying{false}, left_during_copy{false};
  const auto outcomes = on_threads(3, [&](int rank) {
    if (rank == 2) {  // fails the group while rank 1 copies out of rank 0's buffer
      while (!copying) std::this_thread::yield();
      rendezvous.fail("rank 2 gave up");
      return;
    }
    Rendezvous::Hooks hooks = host.for_rank(rank, bad_tokens);
    const auto deliver = hooks.deliver;
    hooks.deliver = [&, deliver](std::span<const std::byte> from, std::span<std::byte> to, Rendezvous::Token ready) {
      copying = true;
      std::this_thread::sleep_for(milliseconds(300));
      const Rendezvous::Token receipt = deliver(from, to, ready);
      copying = false;
      return receipt;
    };
    std::vector<std::byte> buffer(8);
    const Message one[] = {message(1 - rank, buffer)};
    try {
      if (rank == 0) rendezvous.exchange(0, 1, one, {}, host.ready(0), hooks);
      if (rank == 1) rendezvous.exchange(1, 1, {}, one, host.ready(1), hooks);
    } catch (const Error&) {
      if (rank == 0 && copying) left_during_copy = true;
      throw;
    }
  });
  EXPECT_FALSE(left_during_copy);
  EXPECT_NE(outcomes[0].error.find("rank 2 gave up"), std::string::npos) << outcomes[0].error;
}

TEST(Rendezvous, BadMessagesAreRefused) {
  for (const auto& [sends_to, receives_from, needle] : std::vector<std::tuple<std::vector<int>, std::vector<int>, std::string>>{
           {{0}, {}, "rank 0 sends to rank 0, which is itself"},
           {{}, {3}, "rank 0 receives from rank 3, which is not in the group"},
           {{}, {-1}, "rank 0 receives from rank -1"}}) {
    Rendezvous rendezvous(3, milliseconds(20'000));
    std::vector<std::byte> buffer(4);
    std::vector<Message> sends, receives;
    for (int p : sends_to) sends.push_back(message(p, buffer));
    for (int p : receives_from) receives.push_back(message(p, buffer));
    try {
      rendezvous.exchange(0, 1, sends, receives, nullptr, {});
      ADD_FAILURE() << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("ring step 1: " + needle), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(Rendezvous(0, milliseconds(1)), Error);
}
