// How long a ring step may go without progress before the transport gives up: a dead or stalled peer
// becomes an error naming the step and the peer, never a hang. One place for every transport (Host,
// Local, NCCL) so they agree on the variable and its syntax.
#pragma once

#include <chrono>
#include <functional>
#include <string_view>

namespace dilatron::ring {

inline constexpr std::chrono::milliseconds kDefaultRingTimeout{300'000};

// The text of DILATRON_RING_TIMEOUT_S: seconds, a positive decimal number ("300", "2.5"), at least
// 1 ms and at most a year. No sign, exponent, unit or spaces: a typo must not silently become a
// different limit. Throws dilatron::Error naming the variable and the text.
std::chrono::milliseconds parse_ring_timeout(std::string_view text);

// DILATRON_RING_TIMEOUT_S when set and not empty, else kDefaultRingTimeout. Read at every call, so a
// communicator takes the value current when it is created.
std::chrono::milliseconds ring_timeout();

// Calls `finished` until it returns true (then true) or `timeout` has passed (then false); exceptions
// from `finished` pass through. The pause between calls grows from none to `longest_pause`, so a wait
// that ends quickly costs little latency and a long one little CPU.
bool poll_until(const std::function<bool()>& finished, std::chrono::milliseconds timeout,
                std::chrono::microseconds longest_pause = std::chrono::milliseconds(1));

}  // namespace dilatron::ring
