// The continuous-batching engine, as its users (the CLI, the server, the tests, the benchmarks) see it:
// submit a request with a sink, receive text deltas and one final event. Behind it is the actor system of
// ARCHITECTURE.md (CAF): one request actor per request, a scheduler actor, a KV-manager actor and an
// executor actor on its own thread. This header includes no CAF, so its users compile fast.
//
//   auto eng = inference_engine::create(std::move(model), tok, chat, options);
//   const request_id id = eng->submit(params, std::make_shared<my_sink>());
//   eng->cancel(id);  // at any moment; the sink still gets its final event (finish_reason cancelled)
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "inflight/backend.hpp"
#include "inflight/bucket_histogram.hpp"
#include "inflight/chat_template.hpp"
#include "inflight/engine_protocol.hpp"
#include "inflight/sampling.hpp"

namespace inflight {

class tokenizer;

using request_id = uint64_t;

struct generation_params {
  // The prompt: `messages` rendered with the model's chat template when non-empty, else `prompt_tokens`
  // when non-empty (benchmarks, tests), else `prompt` (raw text; special-token text is parsed).
  std::vector<chat_message> messages;
  std::vector<int32_t> prompt_tokens;
  std::string prompt;

  sampling_params sampling;
  int32_t max_tokens = 256;
  std::vector<std::string> stop;  // stop strings: the output ends before the first one, which is not emitted
  bool ignore_eos = false;        // keep going past end-of-generation tokens (benchmarks)
  bool skip_special_tokens = true;
  // false: deltas carry token ids but no text (benchmarks of dummy-weight models, whose ids the tokenizer
  // need not know); stop strings then cannot be used.
  bool detokenize = true;
  std::optional<std::chrono::milliseconds> timeout;  // deadline, counted from submit
  int32_t priority = 0;  // lower runs first
  // Structured output (output_constraint.hpp): the output is a JSON object, JSON valid for a schema, a
  // string of a grammar or a match of a regex. A constraint that does not compile is refused as an invalid
  // request; it cannot be combined with ignore_eos (the output ends where the constraint completes).
  output_constraint constraint;
};

// One generated token and the text it released (empty while a UTF-8 character or a possible stop string is
// still incomplete). The token that completes a stop string is not delivered as a delta.
struct generation_delta {
  int32_t token = -1;
  std::string text;
  bool has_sample = false;  // sampling.logprobs or top_logprobs was asked for
  sample_result sample;
};

// Why a request ended without generating: maps to an HTTP status in the server.
enum class request_error {
  none,
  invalid_request,  // bad params, empty or over-long prompt (HTTP 400)
  queue_full,       // the waiting queue is at its bound (HTTP 429)
  internal,         // the backend failed (HTTP 500)
  unavailable,      // no engine can take it: a gateway with every node down or refusing (HTTP 503)
  node_failed,      // the engine node running it died or became unreachable mid-request (HTTP 502)
};
const char* to_string(request_error error);

struct generation_final {
  engine::finish_reason reason = engine::finish_reason::none;  // stop, length, cancelled, deadline, error
  request_error error = request_error::none;
  std::string message;  // human-readable, for errors
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  std::string text;  // the whole output (the concatenated deltas)
};

// Receives one request's events, in order, from one thread at a time (not always the same one): deltas,
// then exactly one final event. Must not block.
class generation_sink {
 public:
  virtual ~generation_sink() = default;
  virtual void on_delta(const generation_delta& delta) = 0;
  virtual void on_final(const generation_final& final_event) = 0;
};

struct engine_options {
  int32_t max_num_seqs = 64;             // running sequences at most (the batch size)
  int32_t max_num_batched_tokens = 512;  // tokens per step at most; 0: the backend's limit
  int32_t max_waiting = 1024;            // waiting queue bound; beyond it submit is refused (queue_full)
  // Baseline mode (never the default): a batch forms when the engine is empty and max_num_seqs requests
  // wait or the oldest has waited static_batch_window, then runs until its longest member finishes;
  // members that finish earlier keep computing as padding, as a Hugging Face pipeline's batch does.
  bool static_batching = false;
  std::chrono::milliseconds static_batch_window{50};
  bool prefix_caching = true;
  bool pipelining = true;  // plan step N+1 while step N runs (off: one step in flight, for comparison)
  int actor_threads = 2;                 // CAF worker threads (request, scheduler, KV-manager actors)
  std::string model_name;                // what clients call the model; empty: the model's general.name
};

struct engine_stats {
  int32_t waiting = 0, running = 0;
  int64_t steps = 0;                    // steps run by the executor
  int64_t preemptions = 0;
  int64_t prompt_tokens_computed = 0;
  int64_t generated_tokens = 0;
  int64_t finished = 0, cancelled = 0, aborted = 0;
  int32_t kv_blocks_total = 0, kv_blocks_used = 0, kv_blocks_cached = 0, kv_blocks_free = 0;
  int64_t prefix_queried_tokens = 0, prefix_hit_tokens = 0;
  // Since the engine started: seconds from submit to first admission, and sequences per step.
  bucket_histogram queue_time_seconds, step_batch_size;
  // Time from the executor's view: loop_seconds is wall time between the start of the first step and the
  // end of the last one while the engine was busy (idle gaps excluded); forward and sampling are inside it.
  double loop_seconds = 0, forward_seconds = 0, sampling_seconds = 0;
  // Structured output: time spent on token masks (inside sampling_seconds) and the samples they narrowed.
  double constraint_seconds = 0;
  int64_t constrained_samples = 0;
  // Share of the busy loop not spent in the forward pass: scheduling, messaging, sampling, detokenizing.
  double overhead_share() const { return loop_seconds > 0 ? 1.0 - forward_seconds / loop_seconds : 0.0; }
  // Non-empty: the engine has failed (its KV manager or executor stopped) and refuses new requests.
  std::string failure;
};

// What a server needs of the model it serves, without the weights.
struct served_model {
  std::string name;  // what clients put in "model"
  std::shared_ptr<const tokenizer> tok;
  int32_t context_length = 0;  // prompt + max_tokens at most
};

// One engine node behind a gateway, as GET /v1/nodes shows it (a snapshot: the nodes push their load a
// few times a second).
struct node_status {
  std::string name;     // host:port as configured, or the name a joining node gave
  std::string state;    // connecting, up, draining, down, refused (cluster::node_state)
  std::string error;    // why it is down or refused
  bool joined = false;  // it joined the gateway (--join) rather than being configured (--node)
  double weight = 1.0;
  int32_t waiting = 0, running = 0;
  int32_t kv_blocks_total = 0, kv_blocks_used = 0, kv_blocks_cached = 0;
  int64_t prefix_queried_tokens = 0, prefix_hit_tokens = 0;
  int64_t generated_tokens = 0, steps = 0;
  int32_t in_flight = 0;                      // this gateway's requests on it now
  int64_t routed_total = 0, affinity_routed = 0;  // this gateway's requests sent to it, and by prefix affinity
  int64_t last_report_ms = -1;                // since its last load report; -1: none yet
};

class inference_engine {
 public:
  // Starts the actors. `model` runs on the executor's own thread from now on; the tokenizer is shared
  // with the request actors. Throws std::invalid_argument for unusable options.
  static std::unique_ptr<inference_engine> create(std::unique_ptr<backend> model, std::shared_ptr<const tokenizer> tok,
                                        chat_template chat, const engine_options& options);
  // Cancels whatever still runs, waits for its final events, stops the actors.
  virtual ~inference_engine() = default;

  // Never blocks and never throws for bad input: a request that cannot run gets a final event with an
  // error (queue full, prompt too long, invalid sampling params, ...).
  virtual request_id submit(generation_params params, std::shared_ptr<generation_sink> sink) = 0;
  // Ends the request as soon as possible (its final event says cancelled) and frees its KV blocks.
  // Unknown or finished ids are ignored.
  virtual void cancel(request_id id) = 0;
  // A snapshot, gathered from the actors (blocks briefly).
  virtual engine_stats stats() = 0;
  // Blocks until no request is waiting or running and the engine holds none of their sinks any more: a
  // caller may then destroy what its sinks refer to (the server, its io_context).
  virtual void wait_idle() = 0;
  // The model served; null while it is not known yet (a gateway that has not met a node).
  virtual std::shared_ptr<const served_model> model() const = 0;
  // The engine nodes behind a gateway; empty for an engine in this process. Never blocks on actors.
  virtual std::vector<node_status> nodes() const { return {}; }
  virtual bool is_gateway() const { return false; }
};

}  // namespace inflight
