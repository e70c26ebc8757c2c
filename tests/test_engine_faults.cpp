// The engine's actors when one of them dies (a bug such as a protocol error in the KV manager, or the
// executor's thread gone): the scheduler must end every request at once with an error, not leave it
// waiting for a deadline that may never come, and refuse new ones so that a node's gateway fails over.
// White-box: the test is the requester itself (a scoped actor), as a request actor would be. An engine
// node's front actor must see the failure too: it tells its owner (inflight node then exits, closing its
// links, so that gateways fail over) and refuses gateways from then on.
#include <doctest/doctest.h>

#include <caf/all.hpp>

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "cluster_actors.hpp"
#include "engine_actors.hpp"
#include "inflight/cluster_protocol_inspect.hpp"
#include "inflight/cpu_backend.hpp"
#include "inflight/gguf.hpp"
#include "inflight/tokenizer.hpp"

using namespace inflight;
using namespace inflight::engine;

namespace {

struct engine_under_test {
  caf::actor_system_config config;
  caf::actor_system system{config};
  engine_actors actors;

  engine_under_test() {
    auto file = gguf::gguf_file::open(INFLIGHT_DEFAULT_MODEL);
    auto tok = tokenizer::from_gguf(*file);
    cpu_backend_options options;
    options.num_threads = 1;
    options.num_blocks = 256;
    actors = spawn_engine_actors(system, std::make_unique<cpu_backend>(file, options), *tok, engine_options{});
  }
  ~engine_under_test() { stop_engine_actors(actors); }
};

sequence_submit long_request(sequence_id id) {
  sequence_submit submit;
  submit.spec.id = id;
  submit.spec.prompt = {1, 2, 3, 4, 5, 6, 7, 8};
  submit.spec.max_tokens = 4000;  // far longer than the test: only a failure ends it early
  submit.sampling.temperature = 0;
  return submit;
}

// Submits, waits for the first token, kills `victim`, and returns the final event the requester gets.
token_event final_event_after_killing(engine_under_test& engine, const caf::actor& victim) {
  caf::scoped_actor self{engine.system};
  int32_t status = -1;
  self->request(engine.actors.scheduler, std::chrono::seconds(10), long_request(1))
      .receive([&](int32_t answer) { status = answer; }, [&](caf::error&) { status = -2; });
  REQUIRE(status == int32_t(submit_status::accepted));
  bool streaming = false;
  self->receive([&](token_event& event) { streaming = event.event.token >= 0; },
                caf::after(std::chrono::seconds(60)) >> [] {});
  REQUIRE(streaming);
  caf::anon_send_exit(victim, caf::exit_reason::kill);
  token_event final_event;
  bool ended = false;
  // A generous bound, far below what the request would take to finish: 4000 tokens.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!ended && std::chrono::steady_clock::now() < give_up) {
    self->receive(
        [&](token_event& event) {
          if (event.event.finished != finish_reason::none) {
            final_event = event;
            ended = true;
          }
        },
        caf::after(std::chrono::seconds(30)) >> [] {});
  }
  REQUIRE(ended);
  // New work is refused, not queued behind a step that will never come.
  self->request(engine.actors.scheduler, std::chrono::seconds(10), long_request(2))
      .receive([&](int32_t answer) { status = answer; }, [&](caf::error&) { status = -2; });
  CHECK(status == int32_t(submit_status::unavailable));
  return final_event;
}

}  // namespace

TEST_CASE("engine faults: a dead KV manager fails the running request at once and refuses new ones") {
  engine_under_test engine;
  const token_event event = final_event_after_killing(engine, engine.actors.kv_manager);
  CHECK(event.event.finished == finish_reason::error);
  CHECK(event.error.find("the KV manager failed") != std::string::npos);
  CHECK(event.event.generated_tokens < 4000);
  caf::scoped_actor self{engine.system};
  self->request(engine.actors.scheduler, std::chrono::seconds(10), stats_atom::value)
      .receive([&](const scheduler_report& report) { CHECK(report.failure.find("the KV manager") != std::string::npos); },
               [&](caf::error&) { FAIL("no report"); });
}

TEST_CASE("engine faults: a dead executor fails the running request at once and refuses new ones") {
  engine_under_test engine;
  const token_event event = final_event_after_killing(engine, engine.actors.executor);
  CHECK(event.event.finished == finish_reason::error);
  CHECK(event.error.find("the executor failed") != std::string::npos);
}

TEST_CASE("engine faults: an engine node's front reports a dead KV manager and refuses gateways") {
  engine_under_test engine;
  std::mutex mutex;
  std::string failure;
  cluster::front_config config;
  config.name = "test-node";
  config.on_failure = [&](const std::string& why) {
    std::lock_guard lock(mutex);
    failure = why;
  };
  const caf::actor front =
      cluster::spawn_node_front(engine.system, engine.actors, std::make_shared<node_gate>(), std::move(config));
  caf::anon_send_exit(engine.actors.kv_manager, caf::exit_reason::kill);
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  const auto failed = [&] {
    std::lock_guard lock(mutex);
    return !failure.empty();
  };
  while (!failed() && std::chrono::steady_clock::now() < give_up) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  REQUIRE(failed());
  CHECK(failure.find("the KV manager stopped") != std::string::npos);

  caf::scoped_actor self{engine.system};
  std::string refusal;
  self->request(front, std::chrono::seconds(10), cluster::hello{cluster::protocol_version, "gateway", "nonce"})
      .receive([&](const cluster::challenge& answer) { refusal = answer.refusal; },
               [&](caf::error&) { refusal = "no answer"; });
  CHECK(refusal.find("the node's engine has failed") != std::string::npos);
  caf::anon_send_exit(front, caf::exit_reason::user_shutdown);
}
