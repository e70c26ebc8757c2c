#include "server_metrics.hpp"

#include <cstdio>

namespace inflight::net {

namespace {

void append_number(std::string& out, double value) {
  char buffer[40];
  std::snprintf(buffer, sizeof buffer, "%.9g", value);
  out += buffer;
}

void header(std::string& out, const std::string& name, const char* type, const std::string& help) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

void sample(std::string& out, const std::string& name, double value) {
  out += name;
  out += ' ';
  append_number(out, value);
  out += '\n';
}

void metric(std::string& out, const std::string& name, const char* type, const std::string& help, double value) {
  header(out, name, type, help);
  sample(out, name, value);
}

}  // namespace

void render_histogram(std::string& out, const bucket_histogram& histogram, const std::string& name,
                      const std::string& help) {
  header(out, name, "histogram", help);
  int64_t cumulative = 0;
  for (size_t i = 0; i < histogram.counts.size(); ++i) {
    cumulative += histogram.counts[i];
    out += name + "_bucket{le=\"";
    if (i < histogram.upper_bounds.size()) append_number(out, histogram.upper_bounds[i]);
    else out += "+Inf";
    out += "\"} " + std::to_string(cumulative) + "\n";
  }
  sample(out, name + "_sum", histogram.sum);
  out += name + "_count " + std::to_string(histogram.count) + "\n";
}

server_metrics::server_metrics()
    : time_to_first_token_({0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}),
      inter_token_latency_({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}),
      end_to_end_({0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}) {}

void server_metrics::record_finish(engine::finish_reason reason) { ++finished_[size_t(reason)]; }

void server_metrics::record_rejection(int http_status) {
  for (auto& [status, count] : rejected_) {
    if (status == http_status) {
      ++count;
      return;
    }
  }
  rejected_.emplace_back(http_status, 1);
}

std::string server_metrics::render() const {
  std::string out;
  header(out, "inflight_requests_finished_total", "counter", "Generation requests (choices) by finish reason.");
  for (size_t r = 1; r < finished_.size(); ++r) {
    out += "inflight_requests_finished_total{finish_reason=\"";
    out += engine::to_string(engine::finish_reason(r));
    out += "\"} " + std::to_string(finished_[r]) + "\n";
  }
  header(out, "inflight_requests_rejected_total", "counter", "Completion requests refused with an HTTP error, by status.");
  for (const auto& [status, count] : rejected_)
    out += "inflight_requests_rejected_total{status=\"" + std::to_string(status) + "\"} " + std::to_string(count) + "\n";
  metric(out, "inflight_connections_open", "gauge", "HTTP and WebSocket connections open.", open_connections_);
  metric(out, "inflight_connections_refused_total", "counter", "Connections refused beyond --max-connections.",
         double(refused_connections_));
  render_histogram(out, time_to_first_token_, "inflight_time_to_first_token_seconds", "From request to the first generated text.");
  render_histogram(out, inter_token_latency_, "inflight_inter_token_latency_seconds", "Between consecutive streamed text deltas.");
  render_histogram(out, end_to_end_, "inflight_e2e_request_latency_seconds", "From request to the last token.");

  const engine_stats& e = engine_;
  metric(out, "inflight_num_requests_running", "gauge", "Sequences in the running batch.", e.running);
  metric(out, "inflight_num_requests_waiting", "gauge", "Sequences waiting for admission.", e.waiting);
  metric(out, "inflight_kv_blocks_used", "gauge", "KV-cache blocks held by sequences.", e.kv_blocks_used);
  metric(out, "inflight_kv_blocks_cached", "gauge", "Free KV-cache blocks still holding a reusable prefix.", e.kv_blocks_cached);
  metric(out, "inflight_kv_blocks_free", "gauge", "Empty KV-cache blocks.", e.kv_blocks_free);
  metric(out, "inflight_prefix_cache_hit_rate", "gauge", "Share of prompt tokens found in the prefix cache.",
         e.prefix_queried_tokens ? double(e.prefix_hit_tokens) / double(e.prefix_queried_tokens) : 0.0);
  metric(out, "inflight_prompt_tokens_total", "counter", "Prompt tokens computed (recomputation included).",
         double(e.prompt_tokens_computed));
  metric(out, "inflight_generation_tokens_total", "counter", "Tokens generated.", double(e.generated_tokens));
  metric(out, "inflight_preemptions_total", "counter", "Sequences preempted for lack of KV blocks.", double(e.preemptions));
  metric(out, "inflight_engine_steps_total", "counter", "Engine steps run.", double(e.steps));
  metric(out, "inflight_constrained_samples_total", "counter", "Tokens sampled under a structured-output constraint.",
         double(e.constrained_samples));
  metric(out, "inflight_constraint_mask_seconds_total", "counter",
         "Time spent computing and applying structured-output token masks.", e.constraint_seconds);
  // Empty until the first snapshot arrives (no bounds yet): rendered only once they exist.
  if (!e.queue_time_seconds.counts.empty())
    render_histogram(out, e.queue_time_seconds, "inflight_request_queue_time_seconds",
                     "From submit to first admission into the running batch.");
  if (!e.step_batch_size.counts.empty())
    render_histogram(out, e.step_batch_size, "inflight_step_batch_size", "Sequences per engine step.");
  if (!nodes_.empty()) render_nodes(out);
  return out;
}

// A gateway's nodes, one labelled sample each (node names are host:port or what a node called itself:
// quotes and backslashes escaped as Prometheus wants).
void server_metrics::render_nodes(std::string& out) const {
  const auto label = [](const std::string& name) {
    std::string escaped;
    for (const char c : name) {
      if (c == '"' || c == '\\') escaped += '\\';
      if (c == '\n') escaped += "\\n";
      else escaped += c;
    }
    return "{node=\"" + escaped + "\"}";
  };
  const auto gauge = [&](const std::string& name, const char* type, const char* help, auto value_of) {
    header(out, name, type, help);
    for (const node_status& node : nodes_) sample(out, name + label(node.name), double(value_of(node)));
  };
  gauge("inflight_node_up", "gauge", "1 while the engine node is up and reporting, else 0.",
        [](const node_status& n) { return n.state == "up" ? 1 : 0; });
  gauge("inflight_node_requests_running", "gauge", "Sequences running on the node.", [](const node_status& n) { return n.running; });
  gauge("inflight_node_requests_waiting", "gauge", "Sequences waiting on the node.", [](const node_status& n) { return n.waiting; });
  gauge("inflight_node_kv_usage", "gauge", "Share of the node's KV-cache blocks in use.", [](const node_status& n) {
    return n.kv_blocks_total > 0 ? double(n.kv_blocks_used) / n.kv_blocks_total : 0.0;
  });
  gauge("inflight_node_routed_total", "counter", "Requests this gateway routed to the node.",
        [](const node_status& n) { return n.routed_total; });
  gauge("inflight_node_affinity_routed_total", "counter", "... of which by prefix affinity.",
        [](const node_status& n) { return n.affinity_routed; });
}

}  // namespace inflight::net
