// The ring through the C ABI over a transport the caller provides (dilatron_ring_from_callback): ranks
// as threads of this process, a host mailbox as their wire, each rank's host forward and backward on its
// shard equal to the whole-sequence reference; a failing transport is that rank's error, with the
// transport's message.
#include <gtest/gtest.h>

#include <dilatron/c_api.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

namespace {

// Buffered messages keyed by (step, from, to, nth between the pair in the step), first in first out per
// key (a rank may run a whole pass ahead, and the backward repeats the forward's steps): a send is copied
// and returns, a receive waits (at most two seconds) for its key. A failed rank aborts the others' waits.
class Mailbox {
 public:
  int exchange(int me, int step, const dilatron_message* sends, int send_count, const dilatron_message* receives,
               int receive_count, char* error, std::int64_t error_size) {
    std::map<int, int> nth_send, nth_receive;
    {
      std::lock_guard lock(mutex_);
      for (int i = 0; i < send_count; ++i) {
        const auto* bytes = static_cast<const char*>(sends[i].data);
        posted_[{step, me, sends[i].peer, nth_send[sends[i].peer]++}].emplace_back(bytes, bytes + sends[i].bytes);
      }
    }
    changed_.notify_all();
    for (int i = 0; i < receive_count; ++i) {
      const Key key{step, receives[i].peer, me, nth_receive[receives[i].peer]++};
      std::unique_lock lock(mutex_);
      const bool arrived =
          changed_.wait_for(lock, std::chrono::seconds(2), [&] { return aborted_ || !posted_[key].empty(); });
      if (!arrived || aborted_) {
        std::snprintf(error, std::size_t(error_size), "rank %d: no message from rank %d%s", me, receives[i].peer,
                      aborted_ ? " (a peer failed)" : " within 2 s");
        return 1;
      }
      const std::vector<char> got = std::move(posted_[key].front());
      posted_[key].pop_front();
      if (std::int64_t(got.size()) != receives[i].bytes) {
        std::snprintf(error, std::size_t(error_size), "size mismatch");
        return 1;
      }
      std::memcpy(receives[i].data, got.data(), got.size());
    }
    return 0;
  }

  void abort() {
    {
      std::lock_guard lock(mutex_);
      aborted_ = true;
    }
    changed_.notify_all();
  }

 private:
  using Key = std::tuple<int, int, int, int>;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<Key, std::deque<std::vector<char>>> posted_;
  bool aborted_ = false;
};

struct Rank {
  Mailbox* box;
  int rank;
  int fail_at_step;  // > 0: this rank's transport fails there
};

int32_t exchange(void* user, int32_t step, const dilatron_message* sends, int32_t send_count,
                 const dilatron_message* receives, int32_t receive_count, char* error, int64_t error_size) {
  const Rank& r = *static_cast<const Rank*>(user);
  if (step == r.fail_at_step) {
    std::snprintf(error, std::size_t(error_size), "the cable of rank %d was cut", r.rank);
    r.box->abort();
    return 7;
  }
  return r.box->exchange(r.rank, step, sends, send_count, receives, receive_count, error, error_size);
}

// A shard of a contiguous [B, N, H, D] float64 tensor: rows [begin, end), the whole tensor's strides.
dilatron_tensor rows_of(std::vector<double>& t, std::int64_t b, std::int64_t n, std::int64_t h, std::int64_t d,
                        std::int64_t begin, std::int64_t end) {
  return {t.data() + begin * h * d, DILATRON_F64, {b, end - begin, h, d}, {n * h * d, h * d, d, 1}};
}
dilatron_tensor whole(std::vector<double>& t, std::int64_t b, std::int64_t n, std::int64_t h, std::int64_t d) {
  return rows_of(t, b, n, h, d, 0, n);
}

std::vector<double> random_values(std::size_t count, std::mt19937_64& rng) {
  std::normal_distribution<double> normal;
  std::vector<double> out(count);
  for (double& x : out) x = normal(rng);
  return out;
}

double max_difference(const std::vector<double>& a, const std::vector<double>& b) {
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
  return worst;
}

}  // namespace

TEST(CApiRing, ACallersTransportCarriesTheHostRing) {
  const std::int64_t B = 2, N = 61, H = 4, Hkv = 2, D = 8, w[] = {16, 48}, r[] = {1, 2};
  dilatron_attention* a = nullptr;
  ASSERT_EQ(dilatron_create(w, r, 2, DILATRON_LONGNET, 1, 0.0, &a), DILATRON_OK);
  std::mt19937_64 rng(9);
  std::vector<double> q = random_values(std::size_t(B * N * H * D), rng), k = random_values(std::size_t(B * N * Hkv * D), rng),
                      v = random_values(k.size(), rng), dout = random_values(q.size(), rng);
  std::vector<double> want_out(q.size()), want_dq(q.size()), want_dk(k.size()), want_dv(k.size());
  dilatron_tensor tq = whole(q, B, N, H, D), tk = whole(k, B, N, Hkv, D), tv = whole(v, B, N, Hkv, D);
  const dilatron_tensor td = whole(dout, B, N, H, D), to = whole(want_out, B, N, H, D), tdq = whole(want_dq, B, N, H, D),
                        tdk = whole(want_dk, B, N, Hkv, D), tdv = whole(want_dv, B, N, Hkv, D);
  ASSERT_EQ(dilatron_reference_forward(a, &tq, &tk, &tv, &to, nullptr), DILATRON_OK) << dilatron_last_error();
  ASSERT_EQ(dilatron_reference_backward(a, &tq, &tk, &tv, &td, &tdq, &tdk, &tdv), DILATRON_OK) << dilatron_last_error();

  for (const int ranks : {1, 3, 4}) {
    SCOPED_TRACE(ranks);
    Mailbox box;
    std::vector<double> out(q.size(), NAN), dq(q.size(), NAN), dk(k.size(), NAN), dv(k.size(), NAN);
    std::vector<std::string> errors(static_cast<std::size_t>(ranks));
    std::vector<std::thread> threads;
    for (int rank = 0; rank < ranks; ++rank) {
      threads.emplace_back([&, rank] {
        Rank me{&box, rank, 0};
        dilatron_ring* ring = nullptr;
        std::int64_t begin = -1, end = -1;
        if (dilatron_ring_shard(N, ranks, rank, &begin, &end) != DILATRON_OK ||
            dilatron_ring_from_callback(rank, ranks, exchange, &me, &ring) != DILATRON_OK) {
          errors[std::size_t(rank)] = dilatron_last_error();
          return;
        }
        const dilatron_tensor sq = rows_of(q, B, N, H, D, begin, end), sk = rows_of(k, B, N, Hkv, D, begin, end),
                              sv = rows_of(v, B, N, Hkv, D, begin, end), so = rows_of(out, B, N, H, D, begin, end),
                              sd = rows_of(dout, B, N, H, D, begin, end), sdq = rows_of(dq, B, N, H, D, begin, end),
                              sdk = rows_of(dk, B, N, Hkv, D, begin, end), sdv = rows_of(dv, B, N, Hkv, D, begin, end);
        if (dilatron_ring_host_forward(a, ring, N, &sq, &sk, &sv, &so, nullptr) != DILATRON_OK ||
            dilatron_ring_host_backward(a, ring, N, &sq, &sk, &sv, &sd, &sdq, &sdk, &sdv) != DILATRON_OK) {
          errors[std::size_t(rank)] = dilatron_last_error();
        }
        dilatron_ring_destroy(ring);
      });
    }
    for (std::thread& t : threads) t.join();
    for (const std::string& e : errors) EXPECT_EQ(e, "");
    EXPECT_LE(max_difference(out, want_out), 1e-12);
    EXPECT_LE(max_difference(dq, want_dq), 1e-10);
    EXPECT_LE(max_difference(dk, want_dk), 1e-10);
    EXPECT_LE(max_difference(dv, want_dv), 1e-10);
  }

  // Rank 1's transport fails in step 1: its call reports the transport's own message; the others that
  // wait on it stop too.
  Mailbox box;
  std::vector<std::string> errors(3);
  std::vector<dilatron_status> statuses(3, DILATRON_OK);
  std::vector<double> out(q.size());
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 3; ++rank) {
    threads.emplace_back([&, rank] {
      Rank me{&box, rank, rank == 1 ? 1 : 0};
      dilatron_ring* ring = nullptr;
      std::int64_t begin = 0, end = 0;
      dilatron_ring_shard(N, 3, rank, &begin, &end);
      ASSERT_EQ(dilatron_ring_from_callback(rank, 3, exchange, &me, &ring), DILATRON_OK);
      const dilatron_tensor sq = rows_of(q, B, N, H, D, begin, end), sk = rows_of(k, B, N, Hkv, D, begin, end),
                            sv = rows_of(v, B, N, Hkv, D, begin, end), so = rows_of(out, B, N, H, D, begin, end);
      statuses[std::size_t(rank)] = dilatron_ring_host_forward(a, ring, N, &sq, &sk, &sv, &so, nullptr);
      if (statuses[std::size_t(rank)] != DILATRON_OK) errors[std::size_t(rank)] = dilatron_last_error();
      dilatron_ring_destroy(ring);
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(statuses[1], DILATRON_ERROR_TRANSPORT);
  EXPECT_NE(errors[1].find("step 1: the transport failed: the cable of rank 1 was cut"), std::string::npos) << errors[1];
  for (const int other : {0, 2}) {  // a rank that needed rank 1's messages stops with it, never hangs
    const std::string& e = errors[std::size_t(other)];
    EXPECT_TRUE(e.empty() || e.find("(a peer failed)") != std::string::npos) << e;
  }
  dilatron_destroy(a);
}

TEST(CApiRing, ShardsAndBadArgumentsAreChecked) {
  std::int64_t begin = -1, end = -1, total = 0;
  for (int rank = 0; rank < 4; ++rank) {
    ASSERT_EQ(dilatron_ring_shard(10, 4, rank, &begin, &end), DILATRON_OK);
    EXPECT_EQ(begin, total);
    EXPECT_EQ(end - begin, rank < 2 ? 3 : 2) << "the first N % P ranks hold one row more";
    total = end;
  }
  EXPECT_EQ(total, 10);
  for (const auto& [n, ranks, rank] : {std::tuple{10, 4, 4}, std::tuple{10, 0, 0}, std::tuple{3, 4, 0}, std::tuple{10, 4, -1}}) {
    EXPECT_EQ(dilatron_ring_shard(n, ranks, rank, &begin, &end), DILATRON_ERROR_INVALID);
    EXPECT_NE(std::string(dilatron_last_error()).find("needs 0 <= rank < ranks <= seq_len"), std::string::npos);
  }
  EXPECT_EQ(dilatron_ring_shard(10, 4, 0, nullptr, &end), DILATRON_ERROR_INVALID);
  dilatron_ring* ring = nullptr;
  EXPECT_EQ(dilatron_ring_from_callback(0, 2, nullptr, nullptr, &ring), DILATRON_ERROR_INVALID);
  EXPECT_EQ(dilatron_ring_from_callback(2, 2, exchange, nullptr, &ring), DILATRON_ERROR_INVALID);
  EXPECT_NE(std::string(dilatron_last_error()).find("rank 2 of 2"), std::string::npos) << dilatron_last_error();
  EXPECT_EQ(ring, nullptr);
  EXPECT_EQ(dilatron_ring_unique_id(nullptr), DILATRON_ERROR_INVALID);
  EXPECT_EQ(dilatron_ring_from_unique_id(nullptr, 0, 1, &ring), DILATRON_ERROR_INVALID);
  const unsigned char id[DILATRON_RING_ID_BYTES] = {};
  EXPECT_EQ(dilatron_ring_from_unique_id(id, 1, 1, &ring), DILATRON_ERROR_INVALID);
  EXPECT_NE(std::string(dilatron_last_error()).find("NCCL rank 1 of 1"), std::string::npos) << dilatron_last_error();
}
