// The requests an engine has in flight, by id: their request actors (for cancel) and a count (for
// wait_idle). Shared by the in-process engine (engine.cpp) and the gateway (gateway_engine.cpp), which
// both spawn one request actor per submit.
#pragma once

#include <caf/actor.hpp>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "inflight/engine.hpp"

namespace inflight::engine {

class request_book {
 public:
  // Counts request `id` from now on and returns the sink to give its actor: `sink` itself, plus retiring
  // the request from the book when the actor lets go of it (after its final event), having released
  // `sink` first. The book must outlive every request it tracks.
  std::shared_ptr<generation_sink> track(request_id id, std::shared_ptr<generation_sink> sink);
  // The request's actor, once spawned (a request that ended meanwhile is not revived).
  void attach(request_id id, caf::actor actor);
  // Asks the request's actor to end (its final event says cancelled). Unknown ids are ignored.
  void cancel(request_id id);
  void cancel_all();
  // Blocks until every tracked request has had its final event and its sink has been released.
  void wait_idle();
  size_t size() const;

 private:
  friend class tracked_sink;
  void retire(request_id id);

  mutable std::mutex mutex_;
  std::condition_variable idle_;
  std::unordered_map<request_id, caf::actor> live_;
};

}  // namespace inflight::engine
