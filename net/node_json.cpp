#include "node_json.hpp"

#include <algorithm>

#include "json_writer.hpp"

namespace inflight::net {

namespace {

void write_nodes_array(json_writer& w, const std::vector<node_status>& nodes) {
  w.begin_array();
  for (const node_status& n : nodes) {
    w.begin_object().key("name").value(n.name).key("state").value(n.state).key("error");
    if (n.error.empty()) w.null();
    else w.value(n.error);
    w.key("joined").value(n.joined).key("weight").value(n.weight);
    w.key("waiting").value(int64_t(n.waiting)).key("running").value(int64_t(n.running));
    w.key("kv_blocks_used").value(int64_t(n.kv_blocks_used)).key("kv_blocks_total").value(int64_t(n.kv_blocks_total));
    w.key("kv_usage").value(n.kv_blocks_total > 0 ? double(n.kv_blocks_used) / n.kv_blocks_total : 0.0);
    w.key("prefix_cache_hit_rate")
        .value(n.prefix_queried_tokens > 0 ? double(n.prefix_hit_tokens) / double(n.prefix_queried_tokens) : 0.0);
    w.key("in_flight").value(int64_t(n.in_flight)).key("routed_total").value(n.routed_total);
    w.key("affinity_routed").value(n.affinity_routed).key("generated_tokens").value(n.generated_tokens);
    w.key("last_report_ms").value(n.last_report_ms).end_object();
  }
  w.end_array();
}

}  // namespace

void write_node_list(std::string& out, const std::vector<node_status>& nodes) {
  json_writer w(out);
  w.begin_object().key("object").value("list").key("data");
  write_nodes_array(w, nodes);
  w.end_object();
}

void write_gateway_health(std::string& out, const std::vector<node_status>& nodes, bool model_known) {
  const int64_t up = std::count_if(nodes.begin(), nodes.end(), [](const node_status& n) { return n.state == "up"; });
  json_writer w(out);
  w.begin_object().key("status").value(up > 0 ? "ok" : "unavailable").key("model_known").value(model_known);
  w.key("nodes_up").value(up).key("nodes_total").value(int64_t(nodes.size())).key("nodes");
  write_nodes_array(w, nodes);
  w.end_object();
}

}  // namespace inflight::net
