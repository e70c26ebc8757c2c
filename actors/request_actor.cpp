// The request actor, one per request: a thin shell over request_output (detokenizing, stop strings).
//
//   spawn:        prompt -> tokens (chat template when messages are given); bad input ends it at once
//   submit        ──sequence_submit──▶ scheduler, answered with a submit_status (refused: final event)
//   token_event   ◀── scheduler, one per generated token: text delta -> sink; a stop string, the
//                 scheduler's finish (stop id, max_tokens) or an error ends it
//   cancel_atom   from the engine (client gone), deadline_atom from its own timer: the scheduler is told
//                 to drop the sequence, which frees its KV blocks
//
// The sink gets one delta per generated token, a last delta (token -1) with any text held back to the
// end, and exactly one final event; then the actor quits, and late messages for it are dropped.
#include <caf/all.hpp>

#include "engine_actors.hpp"
#include "inflight/tokenizer.hpp"
#include "request_output.hpp"

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
  static inline const char* name = "inflight.request";
};

using request_actor = caf::stateful_actor<request_state>;

void finish(request_actor* self, finish_reason reason, request_error error = request_error::none,
            std::string message = {}) {
  request_state& st = self->state;
  if (st.done) return;
  st.done = true;
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
  self->quit();
}

// Ends the sequence in the scheduler (frees its KV blocks), then the request.
void stop_early(request_actor* self, finish_reason reason) {
  if (self->state.done) return;
  if (self->state.submitted) {
    if (reason == finish_reason::stop)  // a finish, not a cancellation, in the scheduler's books
      self->send(self->state.context->scheduler, cancel_atom::value, self->state.id, reason);
    else
      self->send(self->state.context->scheduler, cancel_atom::value, self->state.id);
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
  return {};
}

void on_token_event(request_actor* self, const token_event& message);

caf::behavior request(request_actor* self, std::shared_ptr<const request_context> context, request_id id,
                      generation_params params, std::shared_ptr<generation_sink> sink) {
  request_state& st = self->state;
  st.context = std::move(context);
  st.sink = std::move(sink);
  st.id = id;

  sequence_submit submit;
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

  const int32_t max_tokens = params.max_tokens;
  self->request(st.context->scheduler, caf::infinite, std::move(submit))
      .then(
          [self, max_tokens](int32_t status) {
            if (submit_status(status) == submit_status::accepted) return;
            self->state.submitted = false;
            const request_error error = submit_status(status) == submit_status::queue_full    ? request_error::queue_full
                                        : submit_status(status) == submit_status::unavailable ? request_error::internal
                                                                                              : request_error::invalid_request;
            finish(self, finish_reason::error, error, refusal_message(submit_status(status), self->state, max_tokens));
          },
          [self](caf::error& failure) {
            finish(self, finish_reason::error, request_error::internal,
                   "the scheduler did not answer: " + self->system().render(failure));
          });
  st.submitted = true;  // a cancel from now on must reach the scheduler (it arrives after the submit)
  if (params.timeout) self->delayed_send(self, *params.timeout, deadline_atom::value);
  // Should the scheduler itself stop, no event would ever come: end the request instead of hanging.
  self->monitor(st.context->scheduler);
  self->set_down_handler([self](caf::down_msg& down) {
    finish(self, finish_reason::error, request_error::internal,
           "the scheduler stopped: " + self->system().render(down.reason));
  });

  return {
      [self](const token_event& message) {
        try {
          on_token_event(self, message);
        } catch (const std::exception& error) {
          // A token the tokenizer cannot decode, or a sink that threw: end the request, never the engine.
          if (self->state.done) return;
          if (self->state.submitted) self->send(self->state.context->scheduler, cancel_atom::value, self->state.id);
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
