#include "runtime/ring/local_communicator.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>

#include "runtime/driver.hpp"
#include "runtime/ring/device_sync.hpp"

namespace dilatron::ring {

// A rank's driver objects. `ready` marks where its stream stood when the step began (its sends' data);
// `delivered` holds one event per message it received, recorded after that copy. Both are reused by
// the next step: the rendezvous returns only when nobody waits on them any more.
struct LocalCommunicator::Device {
  Stream stream;
  Event ready;
  std::vector<std::unique_ptr<Event>> delivered;
};

std::vector<std::unique_ptr<LocalCommunicator>> LocalCommunicator::group(int size, std::chrono::milliseconds timeout) {
  auto rendezvous = std::make_shared<Rendezvous>(size, timeout);
  const CUcontext context = driver::current_context();
  std::vector<std::unique_ptr<LocalCommunicator>> ranks;
  for (int rank = 0; rank < size; ++rank) {
    ranks.push_back(std::unique_ptr<LocalCommunicator>(new LocalCommunicator(rendezvous, rank, context)));
  }
  return ranks;
}

LocalCommunicator::LocalCommunicator(std::shared_ptr<Rendezvous> rendezvous, int rank, CUcontext context)
    : rendezvous_(std::move(rendezvous)), rank_(rank), context_(context) {
  ContextScope scope(context_);
  device_ = std::make_unique<Device>();
}

LocalCommunicator::~LocalCommunicator() {
  try {
    ContextScope scope(context_);
    device_.reset();
  } catch (...) {  // the context is gone: so are its streams and events
  }
}

CUstream LocalCommunicator::stream() const noexcept { return device_->stream.get(); }

void LocalCommunicator::exchange(int step, std::span<const Message> sends, std::span<const Message> receives) {
  try {
    ContextScope scope(context_);
    Device& d = *device_;
    const CUstream stream = d.stream.get();
    while (d.delivered.size() < receives.size()) d.delivered.push_back(std::make_unique<Event>());
    std::size_t copies = 0;
    Rendezvous::Hooks hooks;
    hooks.deliver = [&](std::span<const std::byte> from, std::span<std::byte> to, Rendezvous::Token ready) {
      stream_wait(stream, static_cast<CUevent>(ready));
      if (!to.empty()) {
        DILATRON_CU(cuMemcpyDtoDAsync(reinterpret_cast<CUdeviceptr>(to.data()),
                                      reinterpret_cast<CUdeviceptr>(from.data()), to.size(), stream));
      }
      Event& done = *d.delivered[copies++];
      done.record(stream);
      return static_cast<Rendezvous::Token>(done.get());
    };
    hooks.delivered = [&](Rendezvous::Token copied) { stream_wait(stream, static_cast<CUevent>(copied)); };
    d.ready.record(stream);
    rendezvous_->exchange(rank_, step, sends, receives, d.ready.get(), hooks);
    // The copies wait for the senders' streams, which may hold long or stuck work: bounded too.
    const std::chrono::milliseconds limit = rendezvous_->timeout();
    if (!poll_until([&] { return finished(stream); }, limit)) {
      throw Error(fmt::format("ring step {}: rank {}'s copies did not finish within {:g} s on the GPU", step, rank_,
                              double(limit.count()) / 1000),
                  ErrorKind::cuda);
    }
  } catch (const std::exception& e) {
    rendezvous_->fail(e.what());  // the first reason is kept; the other ranks stop waiting for this one
    throw;
  }
}

}  // namespace dilatron::ring
