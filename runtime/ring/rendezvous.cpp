#include "runtime/ring/rendezvous.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

namespace dilatron::ring {
namespace {

std::string what_of(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an unknown exception";
  }
}

std::string ranks_text(const std::vector<int>& ranks) {
  return fmt::format("{} {}", ranks.size() == 1 ? "rank" : "ranks", fmt::join(ranks, ", "));
}

}  // namespace

Rendezvous::Rendezvous(int size, std::chrono::milliseconds timeout) : size_(size), timeout_(timeout) {
  if (size < 1) throw Error(fmt::format("a local ring group needs at least one rank, not {}", size));
}

std::string Rendezvous::limit() const {
  return fmt::format("{:g} s (DILATRON_RING_TIMEOUT_S)", double(timeout_.count()) / 1000);
}

void Rendezvous::fail(const std::string& why, ErrorKind kind) {
  std::lock_guard lock(mutex_);
  if (failure_.empty()) {
    failure_ = why;
    failure_kind_ = kind;
  }
  changed_.notify_all();
}

void Rendezvous::fail_and_throw(const std::string& why, ErrorKind kind) {
  if (failure_.empty()) {
    failure_ = why;
    failure_kind_ = kind;
  }
  changed_.notify_all();
  throw Error(failure_, failure_kind_);
}

void Rendezvous::check_messages(int rank, int step, std::span<const Message> sends, std::span<const Message> receives) {
  if (rank < 0 || rank >= size_) fail_and_throw(fmt::format("ring step {}: rank {} is not in a group of {}", step, rank, size_), ErrorKind::invalid);
  for (const auto& [messages, verb] : {std::pair{sends, "sends to"}, std::pair{receives, "receives from"}}) {
    for (const Message& m : messages) {
      if (m.peer < 0 || m.peer >= size_ || m.peer == rank) {
        fail_and_throw(fmt::format("ring step {}: rank {} {} rank {}, which is {} (a group of {})", step, rank, verb,
                                   m.peer, m.peer == rank ? "itself" : "not in the group", size_),
                       ErrorKind::invalid);
      }
    }
  }
}

void Rendezvous::wait_for(Lock& lock, Clock::time_point deadline, const std::function<bool()>& done,
                          const std::function<std::string()>& late) {
  for (;;) {
    if (!failure_.empty()) throw Error(failure_, failure_kind_);
    if (done()) return;
    if (changed_.wait_until(lock, deadline) == std::cv_status::timeout && failure_.empty() && !done()) {
      fail_and_throw(late());
    }
  }
}

void Rendezvous::exchange(int rank, int step, std::span<const Message> sends, std::span<const Message> receives,
                          Token ready, const Hooks& hooks) {
  const Clock::time_point deadline = Clock::now() + timeout_;
  Lock lock(mutex_);
  if (!failure_.empty()) throw Error(failure_, failure_kind_);
  check_messages(rank, step, sends, receives);
  Held sent, taken;
  for (const Message& m : sends) {
    sent.push_back(std::make_shared<Slot>(Slot{step, rank, m.peer, m.data, ready, nullptr, State::posted}));
    board_.push_back(sent.back());
  }
  changed_.notify_all();
  try {
    receive_all(lock, rank, step, receives, hooks, deadline, taken);
    acknowledge_sends(lock, rank, step, sent, hooks, deadline);
    wait_for(
        lock, deadline,
        [&] { return std::all_of(taken.begin(), taken.end(), [](const auto& s) { return s->state == State::acknowledged; }); },
        [&] {
          std::vector<int> silent;
          for (const auto& s : taken) {
            if (s->state != State::acknowledged) silent.push_back(s->sender);
          }
          return fmt::format("ring step {}: rank {} received from {} but they did not confirm within {}", step, rank,
                             ranks_text(silent), limit());
        });
  } catch (...) {
    withdraw(lock, sent);
    throw;
  }
}

void Rendezvous::receive_all(Lock& lock, int rank, int step, std::span<const Message> receives, const Hooks& hooks,
                             Clock::time_point deadline, Held& taken) {
  std::vector<const Message*> pending;
  for (const Message& m : receives) pending.push_back(&m);
  while (!pending.empty()) {
    // Whichever sender comes first is served first; several messages of one sender in a step meet their
    // receives in the order both sides list them (the board is oldest first, `pending` in listed order).
    std::size_t which = 0;
    Held::iterator found;
    wait_for(
        lock, deadline,
        [&] {
          for (which = 0; which < pending.size(); ++which) {
            found = std::find_if(board_.begin(), board_.end(), [&](const auto& s) {
              return s->step == step && s->sender == pending[which]->peer && s->receiver == rank;
            });
            if (found != board_.end()) return true;
          }
          return false;
        },
        [&] {
          std::vector<int> missing;
          for (const Message* m : pending) missing.push_back(m->peer);
          return fmt::format("ring step {}: rank {} got nothing from {} within {} (stopped, or never reached this step)",
                             step, rank, ranks_text(missing), limit());
        });
    const std::shared_ptr<Slot> slot = *found;
    const Message& receive = *pending[which];
    if (slot->data.size() != receive.data.size()) {
      fail_and_throw(fmt::format("ring step {}: rank {} sends {} bytes to rank {}, which expects {}", step,
                                 slot->sender, slot->data.size(), rank, receive.data.size()),
                     ErrorKind::invalid);
    }
    board_.erase(found);
    slot->state = State::taking;
    lock.unlock();
    Token receipt = nullptr;
    std::exception_ptr error;
    try {
      receipt = hooks.deliver(slot->data, receive.data, slot->ready);
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    if (error) {
      slot->state = State::posted;  // not copying any more: its sender may leave
      fail_and_throw(fmt::format("ring step {}: rank {} could not take the message from rank {}: {}", step, rank,
                                 slot->sender, what_of(error)));
    }
    slot->receipt = receipt;
    slot->state = State::delivered;
    taken.push_back(slot);
    pending.erase(pending.begin() + std::ptrdiff_t(which));
    changed_.notify_all();
  }
}

void Rendezvous::acknowledge_sends(Lock& lock, int rank, int step, const Held& sent, const Hooks& hooks,
                                   Clock::time_point deadline) {
  for (const std::shared_ptr<Slot>& slot : sent) {
    wait_for(
        lock, deadline, [&] { return slot->state == State::delivered; },
        [&] {
          std::vector<int> missing;
          for (const auto& s : sent) {
            if (s->state == State::posted || s->state == State::taking) missing.push_back(s->receiver);
          }
          return fmt::format("ring step {}: {} did not take rank {}'s message within {} (stopped, or never reached "
                             "this step)",
                             step, ranks_text(missing), rank, limit());
        });
    lock.unlock();
    std::exception_ptr error;
    try {
      hooks.delivered(slot->receipt);
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    if (error) {
      fail_and_throw(fmt::format("ring step {}: rank {} could not order its buffer after rank {}'s copy: {}", step,
                                 rank, slot->receiver, what_of(error)));
    }
    slot->state = State::acknowledged;
    changed_.notify_all();
  }
}

void Rendezvous::withdraw(Lock& lock, const Held& sent) {
  std::erase_if(board_, [&](const auto& s) { return std::find(sent.begin(), sent.end(), s) != sent.end(); });
  changed_.wait(lock, [&] {
    return std::none_of(sent.begin(), sent.end(), [](const auto& s) { return s->state == State::taking; });
  });
}

}  // namespace dilatron::ring
