// Static files compiled into the binary (net/web/, turned into a C++ source by net/CMakeLists.txt), so the
// server needs nothing on disk besides the model.
#pragma once

#include <string_view>

namespace inflight::net {

extern const std::string_view chat_page_html;  // GET /: a chat page that streams over /v1/ws

}  // namespace inflight::net
