// The request actor, one per request: a thin shell over request_output (detokenizing, stop strings).
//
//   spawn:        prompt -> tokens (chat template when messages are given); bad input ends it at once
//   route         behind a gateway only: ask the router for an engine node (prompt prefix hashes for its
//                 affinity); the node's front actor stands in for the scheduler from then on
//   submit        ──sequence_submit──▶ scheduler (or node front), answered with a submit_status (refused:
//                 final event)
//   token_event   ◀── scheduler, one per generated token: text delta -> sink; a stop string, the
//                 scheduler's finish (stop id, max_tokens) or an error ends it
//   cancel_atom   from the engine (client gone), deadline_atom from its own timer: the scheduler is told
//                 to drop the sequence, which frees its KV blocks
//
// Behind a gateway a node can fail under a request: its front actor goes down (the link closed, or CAF's
// heartbeat timed out). A request that has received no token yet is routed again, to another node, as if
// nothing had happened; one that has already streamed tokens ends with node_failed (HTTP 502, an SSE error
// event). A node that answers the submit with draining or unavailable (leaving, or its engine failed) is
// skipped the same way; queue_full and too_long end the request (429, 400) as they would in one process.
//
// The sink gets one delta per generated token, a last delta (token -1) with any text held back to the
// end, and exactly one final event; then the actor quits, and late messages for it are dropped.
#include <caf/all.hpp>

#include <algorithm>

#include "engine_actors.hpp"
#include "inflight/tokenizer.hpp"
#include "request_output.hpp"
#include "routing_policy.hpp"

namespace inflight::engine {

namespace {

struct request_state {
  std::shared_ptr<const request_context> context;
  std::shared_ptr<generation_sink> sink;
  request_id id = 0;
  std::unique_ptr<request_output> output;
  int32_t prompt_tokens = 0, completion_tokens = 0;
  bool submitted = false, done = false;
  generation_delta delta;  // reused
  sequence_submit submit;  // kept to submit again elsewhere
  int32_t max_tokens = 0;
  // Where the sequence runs: the scheduler in this process, or a node's front actor behind a gateway.
  caf::actor target;
  uint64_t attempt = 0;  // answers to an earlier attempt's submit are ignored
  // Behind a gateway:
  bool routed = false;
  int32_t node = -1;  // the router's index of the node, -1 when none is held
  std::string node_name;
  std::vector<int32_t> excluded;  // nodes this request failed on
  std::vector<uint64_t> prefix_hashes;
  // A route question is out: the actor outlives its end until the answer comes, so that a node the router
  // picked meanwhile is handed back (else its in-flight count would never come down).
  bool route_pending = false;
  static inline const char* name = "inflight.request";
};

using request_actor = caf::stateful_actor<request_state>;

// Hands the node back to the router's books (its in-flight count).
void release_node(request_actor* self) {
  request_state& st = self->state;
  if (st.node < 0) return;
  self->send(st.context->router, routed_atom::value, st.node);
  st.node = -1;
}

void finish(request_actor* self, finish_reason reason, request_error error = request_error::none,
            std::string message = {}) {
  request_state& st = self->state;
  if (st.done) return;
  st.done = true;
  release_node(self);
  // A monitor lives in the monitored actor and holds the monitoring one's address (a weak reference, which
  // keeps the dead actor's memory allocated): left in place, every finished request would stay in the
  // long-lived scheduler's memory, about 1.8 KiB each (found by tools/soak.py).
  if (st.target) self->demonitor(st.target);
  generation_final final_event;
  if (st.output) {
    st.delta.text.clear();
    st.output->finish(st.delta.text);
    if (!st.delta.text.empty()) {
      st.delta.token = -1;
      st.delta.has_sample = false;
      try {
        st.sink->on_delta(st.delta);
      } catch (const std::exception&) {
        // As in on_final below: the final event still goes out.
      }
    }
    final_event.text = st.output->text();
    if (st.output->stopped()) reason = finish_reason::stop;
  }
  final_event.reason = reason;
  final_event.error = error;
  final_event.message = std::move(message);
  final_event.prompt_tokens = st.prompt_tokens;
  final_event.completion_tokens = st.completion_tokens;
  try {
    st.sink->on_final(final_event);
  } catch (const std::exception&) {
    // The sink's own problem; the request is over either way.
  }
  st.sink.reset();
  if (!st.route_pending) self->quit();
}

// Ends the sequence in the scheduler (frees its KV blocks), then the request.
void stop_early(request_actor* self, finish_reason reason) {
  if (self->state.done) return;
  if (self->state.submitted) {
    if (reason == finish_reason::stop)  // a finish, not a cancellation, in the scheduler's books
      self->send(self->state.target, stopped_atom::value, self->state.id);
    else
      self->send(self->state.target, cancel_atom::value, self->state.id);
  }
  finish(self, reason);
}

std::string refusal_message(submit_status status, const request_state& st, int32_t max_tokens) {
  switch (status) {
    case submit_status::queue_full: return "the server is at capacity (waiting queue full); retry later";
    case submit_status::too_long: {
      const int64_t total = int64_t(st.prompt_tokens) + max_tokens;
      return "the prompt (" + std::to_string(st.prompt_tokens) + " tokens) plus max_tokens (" +
             std::to_string(max_tokens) + ") exceeds " +
             (total > st.context->max_model_len ? "the context length " + std::to_string(st.context->max_model_len)
                                                : std::string("the KV cache"));
    }
    case submit_status::empty_prompt: return "the prompt is empty";
    case submit_status::invalid_max_tokens: return "max_tokens must be at least 1";
    case submit_status::duplicate_id: return "duplicate request id";
    case submit_status::unavailable: return "the engine has failed and takes no more requests";
    case submit_status::draining: return "the engine is shutting down";
    case submit_status::accepted: break;
  }
  return "refused";
}

// Tokens of the prompt, or an error message naming what is wrong with the request.
std::string prepare(const request_context& ctx, const generation_params& params, std::vector<int32_t>& tokens) {
  if (const char* error = validate(params.sampling); *error) return error;
  if (params.max_tokens < 1) return "max_tokens must be at least 1";
  for (const std::string& stop : params.stop)
    if (stop.empty()) return "stop strings must not be empty";
  if (!params.messages.empty()) {
    tokens = ctx.tok->encode(ctx.chat->render(params.messages, /*add_generation_prompt=*/true), true);
  } else if (!params.prompt_tokens.empty()) {
    for (const int32_t token : params.prompt_tokens)
      if (token < 0 || token >= ctx.tok->vocab_size()) return "prompt token id " + std::to_string(token) + " is out of range";
    tokens = params.prompt_tokens;
  } else {
    tokens = ctx.tok->encode(params.prompt, true);
  }
  if (tokens.empty()) return "the prompt is empty";
  for (const auto& [token, bias] : params.sampling.logit_bias)
    if (token >= ctx.tok->vocab_size())
      return "logit_bias token id " + std::to_string(token) + " is out of range (the vocabulary has " +
             std::to_string(ctx.tok->vocab_size()) + " tokens)";
  if (!params.sampling.logit_bias.empty() && !ctx.host_sampling)
    return "logit_bias is not supported by this engine's backend yet (the CUDA backend samples on the GPU)";
  if (params.constraint.active()) {
    if (params.ignore_eos) return "ignore_eos cannot be combined with a constrained output (it ends where the constraint is complete)";
    if (!ctx.constraints) return "structured output is not available";
    if (!ctx.host_sampling)
      return "structured output is not supported by this engine's backend yet (the CUDA backend samples on the GPU "
             "and takes no token masks)";
    try {
      (void)ctx.constraints->compile(params.constraint);  // the executor then finds it in the compiler's cache
    } catch (const std::invalid_argument& error) {
      return error.what();
    }
  }
  if (int64_t(tokens.size()) + params.max_tokens > ctx.max_model_len && ctx.router) {
    // The nodes would refuse it too; say so without a round trip.
    return "the prompt (" + std::to_string(tokens.size()) + " tokens) plus max_tokens (" +
           std::to_string(params.max_tokens) + ") exceeds the context length " + std::to_string(ctx.max_model_len);
  }
  return {};
}

void route(request_actor* self);

// Sends the sequence to st.target and waits for its verdict.
void submit_to_target(request_actor* self) {
  request_state& st = self->state;
  const uint64_t attempt = ++st.attempt;
  self->request(st.target, caf::infinite, st.submit)
      .then(
          [self, attempt](int32_t status) {
            request_state& st = self->state;
            if (st.done || attempt != st.attempt) return;
            const submit_status verdict = submit_status(status);
            if (verdict == submit_status::accepted) return;
            st.submitted = false;
            // A node that is leaving, or does not admit us (it restarted, its engine failed): try another.
            if (st.routed && (verdict == submit_status::draining || verdict == submit_status::unavailable)) {
              st.excluded.push_back(st.node);
              release_node(self);
              self->demonitor(st.target);
              st.target = caf::actor{};  // its down message, should one follow, is not ours to act on
              return route(self);
            }
            const request_error error = verdict == submit_status::queue_full    ? request_error::queue_full
                                        : verdict == submit_status::unavailable ? request_error::internal
                                                                                : request_error::invalid_request;
            finish(self, finish_reason::error, error, refusal_message(verdict, st, st.max_tokens));
          },
          [self, attempt](caf::error& failure) {
            if (self->state.done || attempt != self->state.attempt) return;
            finish(self, finish_reason::error, request_error::internal,
                   "the scheduler did not answer: " + self->system().render(failure));
          });
  st.submitted = true;  // a cancel from now on must reach the scheduler (it arrives after the submit)
  // Should the scheduler (or the node) stop, no event would ever come: the down handler acts instead.
  self->monitor(st.target);
}

// Asks the router for a node that is not excluded, then submits there.
void route(request_actor* self) {
  request_state& st = self->state;
  if (int32_t(st.excluded.size()) >= st.context->max_attempts) {
    return finish(self, finish_reason::error, request_error::unavailable,
                  "no engine node could take the request (tried " + std::to_string(st.excluded.size()) + ")");
  }
  st.route_pending = true;
  self->request(st.context->router, std::chrono::seconds(10), route_atom::value, st.prefix_hashes, st.excluded)
      .then(
          [self](int32_t node, const std::string& name_or_reason, const caf::actor& front) {
            request_state& st = self->state;
            st.route_pending = false;
            if (st.done) {  // cancelled or timed out meanwhile: give the node back, and go
              if (node >= 0) self->send(st.context->router, routed_atom::value, node);
              return self->quit();
            }
            if (node < 0 || !front) return finish(self, finish_reason::error, request_error::unavailable, name_or_reason);
            st.node = node;
            st.node_name = name_or_reason;
            st.target = front;
            submit_to_target(self);
          },
          [self](caf::error& failure) {
            request_state& st = self->state;
            st.route_pending = false;
            if (st.done) return self->quit();
            finish(self, finish_reason::error, request_error::unavailable,
                   "the gateway's router did not answer: " + self->system().render(failure));
          });
}

void on_token_event(request_actor* self, const token_event& message);

caf::behavior request(request_actor* self, std::shared_ptr<const request_context> context, request_id id,
                      generation_params params, std::shared_ptr<generation_sink> sink) {
  request_state& st = self->state;
  st.context = std::move(context);
  st.sink = std::move(sink);
  st.id = id;
  st.routed = static_cast<bool>(st.context->router);

  sequence_submit& submit = st.submit;
  std::string error;
  try {
    error = prepare(*st.context, params, submit.spec.prompt);
    if (error.empty() && !params.detokenize && !params.stop.empty()) error = "stop strings need detokenize";
    if (error.empty() && params.detokenize)
      st.output = std::make_unique<request_output>(st.context->tok, params.stop, params.skip_special_tokens);
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (!error.empty()) {
    finish(self, finish_reason::error, request_error::invalid_request, error);
    return {};
  }
  st.prompt_tokens = int32_t(submit.spec.prompt.size());
  submit.spec.id = id;
  submit.spec.max_tokens = params.max_tokens;
  submit.spec.priority = params.priority;
  if (!params.ignore_eos) submit.spec.stop_token_ids = st.context->tok->end_of_generation_ids();
  submit.sampling = params.sampling;
  submit.constraint = std::move(params.constraint);
  st.max_tokens = params.max_tokens;

  self->set_down_handler([self](caf::down_msg& down) {
    request_state& st = self->state;
    if (st.done || down.source != st.target.address()) return;
    st.submitted = false;
    if (!st.routed) {
      return finish(self, finish_reason::error, request_error::internal,
                    "the scheduler stopped: " + self->system().render(down.reason));
    }
    if (st.completion_tokens == 0) {  // nothing reached the client yet: another node can start over
      st.excluded.push_back(st.node);
      release_node(self);
      st.target = caf::actor{};
      return route(self);
    }
    finish(self, finish_reason::error, request_error::node_failed,
           "the engine node " + st.node_name + " failed mid-request (" + self->system().render(down.reason) +
               "); " + std::to_string(st.completion_tokens) + " tokens had been generated");
  });
  if (params.timeout) self->delayed_send(self, *params.timeout, deadline_atom::value);
  if (st.routed) {
    st.prefix_hashes = cluster::routing_policy::prefix_hashes(submit.spec.prompt, st.context->prefix_block_size,
                                                               st.context->prefix_max_blocks);
    route(self);
  } else {
    st.target = st.context->scheduler;
    submit_to_target(self);
  }

  return {
      [self](const token_event& message) {
        request_state& st = self->state;
        // Only the node this request runs on speaks for it (an earlier node's late events, or anyone else
        // on the middleman, are not heard).
        if (st.routed && (!self->current_sender() || !st.target || self->current_sender()->node() != st.target.node()))
          return;
        try {
          on_token_event(self, message);
        } catch (const std::exception& error) {
          // A token the tokenizer cannot decode, or a sink that threw: end the request, never the engine.
          if (st.done) return;
          if (st.submitted) self->send(st.target, cancel_atom::value, st.id);
          finish(self, finish_reason::error, request_error::internal, error.what());
        }
      },
      [self](cancel_atom) { stop_early(self, finish_reason::cancelled); },
      [self](deadline_atom) { stop_early(self, finish_reason::deadline); },
  };
}

// One event from the scheduler: a token (text delta, stop strings) and possibly the end.
void on_token_event(request_actor* self, const token_event& message) {
  request_state& st = self->state;
  if (st.done) return;
  const sequence_event& event = message.event;
  if (event.token >= 0) {
    ++st.completion_tokens;
    st.delta.token = event.token;
    st.delta.text.clear();
    st.delta.has_sample = message.has_sample;
    if (message.has_sample) st.delta.sample = message.sample;
    const bool stop_string = st.output && st.output->on_token(event.token, st.delta.text);
    st.sink->on_delta(st.delta);
    if (stop_string && event.finished == finish_reason::none) return stop_early(self, finish_reason::stop);
  }
  if (event.finished != finish_reason::none) {
    st.submitted = false;
    const request_error error = event.finished == finish_reason::error || event.finished == finish_reason::aborted
                                    ? request_error::internal
                                    : request_error::none;
    std::string text = event.finished == finish_reason::aborted
                           ? "the KV cache cannot hold this sequence"
                           : message.error;
    finish(self, event.finished, error, std::move(text));
  }
}

}  // namespace

caf::actor spawn_request(caf::actor_system& system, std::shared_ptr<const request_context> context, request_id id,
                         generation_params params, std::shared_ptr<generation_sink> sink) {
  return system.spawn(request, std::move(context), id, std::move(params), std::move(sink));
}

}  // namespace inflight::engine
