// JSON of a gateway's engine nodes: GET /v1/nodes and the gateway's /health. No Beast, unit-tested on
// strings (tests/test_openai_response.cpp).
#pragma once

#include <string>
#include <vector>

#include "inflight/engine.hpp"

namespace inflight::net {

// {"object": "list", "data": [{"name", "state", "error", "joined", "weight", "waiting", "running",
//  "kv_blocks_used", "kv_blocks_total", "kv_usage", "prefix_cache_hit_rate", "in_flight", "routed_total",
//  "affinity_routed", "generated_tokens", "last_report_ms"}, ...]}
void write_node_list(std::string& out, const std::vector<node_status>& nodes);

// {"status": "ok" | "unavailable", "model_known": bool, "nodes_up": N, "nodes_total": M, "nodes": [...]}
void write_gateway_health(std::string& out, const std::vector<node_status>& nodes, bool model_known);

}  // namespace inflight::net
