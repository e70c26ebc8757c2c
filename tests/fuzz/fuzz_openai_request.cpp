// Fuzz target: request bodies from the network, as the HTTP and WebSocket layers hand them to the parser:
// both completion endpoints, the WebSocket envelope, /tokenize and /detokenize. The parser promises
// never to throw for bad input; a parsed request must satisfy the limits it was parsed under.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <variant>

#include "openai_request.hpp"

using namespace inflight::net;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  const request_limits limits{4, 8, 4, 32};
  for (const endpoint kind : {endpoint::completions, endpoint::chat_completions}) {
    const parse_result parsed = parse_request(kind, body, limits);
    if (const auto* req = std::get_if<completion_request>(&parsed)) {
      // What the server relies on after a successful parse.
      if (req->n < 1 || req->n > limits.max_n) std::abort();
      if (req->params.stop.size() > size_t(limits.max_stop)) std::abort();
      if (req->params.max_tokens < 1) std::abort();
      if (kind == endpoint::completions &&
          (req->prompt_texts.size() + req->prompt_tokens.size() == 0 ||
           req->prompt_texts.size() + req->prompt_tokens.size() > size_t(limits.max_prompts)))
        std::abort();
      if (kind == endpoint::chat_completions && req->messages.empty()) std::abort();
    } else if (std::get<api_error>(parsed).status < 400 || std::get<api_error>(parsed).message.empty()) {
      std::abort();  // every refusal is an error status with a message
    }
  }
  (void)parse_ws_envelope(body);
  (void)parse_tokenize_request(body);
  (void)parse_detokenize_request(body);
  return 0;
}
