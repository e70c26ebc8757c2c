#include "request_book.hpp"

#include <caf/all.hpp>

#include "engine_actors.hpp"

namespace inflight::engine {

// Wraps the caller's sink: the request leaves the book when its actor lets go of this sink, after its
// final event, and only once the caller's sink is released. Not at the final event itself: the caller's
// sink may refer to what the caller destroys once wait_idle() returns (the server's sinks hold asio timers
// of its io_context), so the engine must not hold it then (found by ASan: the request actor released a
// server's sink after the server was gone).
class tracked_sink final : public generation_sink {
 public:
  tracked_sink(request_book& book, request_id id, std::shared_ptr<generation_sink> inner)
      : book_(book), id_(id), inner_(std::move(inner)) {}
  ~tracked_sink() override {
    inner_.reset();
    book_.retire(id_);
  }
  void on_delta(const generation_delta& delta) override { inner_->on_delta(delta); }
  void on_final(const generation_final& final_event) override { inner_->on_final(final_event); }

 private:
  request_book& book_;
  request_id id_;
  std::shared_ptr<generation_sink> inner_;
};

std::shared_ptr<generation_sink> request_book::track(request_id id, std::shared_ptr<generation_sink> sink) {
  {
    std::lock_guard lock(mutex_);
    live_.emplace(id, caf::actor{});  // counted from now on; the handle follows
  }
  return std::make_shared<tracked_sink>(*this, id, std::move(sink));
}

void request_book::attach(request_id id, caf::actor actor) {
  std::lock_guard lock(mutex_);
  if (const auto found = live_.find(id); found != live_.end()) found->second = std::move(actor);
}

void request_book::cancel(request_id id) {
  std::lock_guard lock(mutex_);
  if (const auto found = live_.find(id); found != live_.end() && found->second)
    caf::anon_send(found->second, cancel_atom::value);
}

void request_book::cancel_all() {
  std::lock_guard lock(mutex_);
  for (auto& [id, actor] : live_)
    if (actor) caf::anon_send(actor, cancel_atom::value);
}

void request_book::wait_idle() {
  std::unique_lock lock(mutex_);
  idle_.wait(lock, [this] { return live_.empty(); });
}

size_t request_book::size() const {
  std::lock_guard lock(mutex_);
  return live_.size();
}

void request_book::retire(request_id id) {
  std::lock_guard lock(mutex_);
  live_.erase(id);
  if (live_.empty()) idle_.notify_all();
}

}  // namespace inflight::engine
