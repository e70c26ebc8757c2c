// Fuzz target: one HTTP connection fed raw bytes: the real Beast session (net/http_session.cpp and what
// it hands requests to: completions whole and as SSE, the small endpoints, WebSocket upgrades), over
// loopback TCP. The client sends the input, closes its sending side and reads until the server closes:
// a crash, a sanitizer report, or a server that neither answers nor closes is a finding.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_server.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  inflight::fuzz::client_connection connection;
  connection.send_all(std::string_view(reinterpret_cast<const char*>(data), size));
  connection.finish_sending();
  (void)connection.read();
  return 0;
}
