// Fuzz target: WebSocket messages on /v1/ws, as raw frames (text and binary, fragmented, control frames,
// masked or not: the input is the byte stream after the handshake). As a conforming client does (RFC
// 6455 §4.1), the harness waits for the server's 101 before it sends the frames; then it closes its
// sending side and reads until the server closes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "fuzz_server.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  inflight::fuzz::client_connection connection;
  connection.send_all(
      "GET /v1/ws?api_key=fuzz-key HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
  const std::string handshake = connection.read("\r\n\r\n");
  if (handshake.rfind("HTTP/1.1 101", 0) != 0) std::abort();  // the upgrade itself must work
  connection.send_all(std::string_view(reinterpret_cast<const char*>(data), size));
  connection.finish_sending();
  (void)connection.read();
  return 0;
}
