// What gateway and node share besides their actors: CAF's settings for a process with links, the message
// types that cross them, the checks of the link options, host:port parsing, the model card of a GGUF, the
// gateway's snapshot of its cluster.
#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <stdexcept>

#include "cluster_actors.hpp"
#include "cluster_auth.hpp"
#include "inflight/gguf.hpp"
#include "inflight/tokenizer.hpp"

namespace inflight {

namespace {

std::string openssl_error() {
  std::string text;
  while (const unsigned long code = ERR_get_error()) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof buffer);
    if (!text.empty()) text += "; ";
    text += buffer;
  }
  return text.empty() ? "unknown OpenSSL error" : text;
}

}  // namespace

std::string check_cluster_link_options(const cluster_link_options& link) {
  if (link.heartbeat.count() <= 0 || link.link_timeout.count() <= 0) return "the heartbeat and the link timeout must be positive";
  if (link.link_timeout < 2 * link.heartbeat)
    return "the link timeout (" + std::to_string(link.link_timeout.count()) +
           " ms) must be at least twice the heartbeat interval (" + std::to_string(link.heartbeat.count()) +
           " ms), or healthy links would be declared dead";
  const bool any_tls = !link.tls_certificate.empty() || !link.tls_key.empty() || !link.tls_ca_file.empty();
  if (!any_tls) return {};
  if (link.tls_certificate.empty() || link.tls_key.empty() || link.tls_ca_file.empty())
    return "TLS needs a certificate, its private key and a CA file (all three)";
  // CAF's OpenSSL module raises an exception from its I/O thread when it cannot load these: load them here
  // first, so that a bad file is a clear error at start instead.
  SSL_CTX* context = SSL_CTX_new(TLS_method());
  if (context == nullptr) return "cannot create an OpenSSL context: " + openssl_error();
  std::string problem;
  if (!link.tls_passphrase.empty()) SSL_CTX_set_default_passwd_cb_userdata(context, const_cast<char*>(link.tls_passphrase.c_str()));
  if (SSL_CTX_use_certificate_chain_file(context, link.tls_certificate.c_str()) != 1)
    problem = link.tls_certificate + ": cannot load the certificate: " + openssl_error();
  else if (SSL_CTX_use_PrivateKey_file(context, link.tls_key.c_str(), SSL_FILETYPE_PEM) != 1)
    problem = link.tls_key + ": cannot load the private key: " + openssl_error();
  else if (SSL_CTX_check_private_key(context) != 1)
    problem = link.tls_key + ": the private key does not match the certificate " + link.tls_certificate;
  else if (SSL_CTX_load_verify_locations(context, link.tls_ca_file.c_str(), nullptr) != 1)
    problem = link.tls_ca_file + ": cannot load the CA certificates: " + openssl_error();
  SSL_CTX_free(context);
  return problem;
}

std::pair<std::string, uint16_t> parse_host_port(const std::string& text) {
  const auto bad = [&](const std::string& why) {
    return std::invalid_argument("'" + text + "': " + why + " (expected HOST:PORT, or [IPv6]:PORT)");
  };
  std::string host;
  std::string port;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') throw bad("no port");
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string::npos) throw bad("no port");
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string::npos) throw bad("an IPv6 address needs brackets");
  }
  if (host.empty()) throw bad("no host");
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos) throw bad("bad port");
  const long number = std::stol(port);
  if (number < 1 || number > 65535) throw bad("the port must be in [1, 65535]");
  return {host, uint16_t(number)};
}

cluster::model_card describe_model(const gguf::gguf_file& file) {
  cluster::model_card card;
  card.name = file.find_string("general.name").value_or("");
  card.tokenizer = tokenizer::config_from_gguf(file);
  if (const auto text = file.find_string("tokenizer.chat_template")) {
    card.has_chat_template = true;
    card.chat_template = *text;
  }
  // The header (metadata and tensor table) says what the model is; samples of the tensor data tell two
  // fine-tunes of one shape apart without reading gigabytes.
  std::ifstream in(file.path(), std::ios::binary);
  if (!in) throw std::runtime_error(file.path() + ": cannot read it again for its fingerprint");
  std::string material(size_t(file.data_offset()), '\0');
  in.read(material.data(), std::streamsize(material.size()));
  for (const gguf::tensor_info& tensor : file.tensors()) {
    const size_t sample = size_t(std::min<uint64_t>(tensor.num_bytes, 4096));
    material.append(reinterpret_cast<const char*>(tensor.data), sample);
  }
  if (!in) throw std::runtime_error(file.path() + ": cannot read its header for the fingerprint");
  card.fingerprint = cluster::sha256_hex(material);
  return card;
}

namespace cluster {

uint32_t spoken_protocol_version() {
  static const uint32_t version = [] {
    const char* text = std::getenv("INFLIGHT_PROTOCOL_VERSION_OVERRIDE");
    return text != nullptr && *text != '\0' ? uint32_t(std::strtoul(text, nullptr, 10)) : protocol_version;
  }();
  return version;
}

void add_cluster_message_types(caf::actor_system_config& config) {
  config.add_message_type<engine::sequence_submit>("inflight::engine::sequence_submit");
  config.add_message_type<engine::token_event>("inflight::engine::token_event");
  config.add_message_type<hello>("inflight::cluster::hello");
  config.add_message_type<challenge>("inflight::cluster::challenge");
  config.add_message_type<proof>("inflight::cluster::proof");
  config.add_message_type<welcome>("inflight::cluster::welcome");
  config.add_message_type<node_load>("inflight::cluster::node_load");
}

void configure_cluster_system(caf::actor_system_config& config, const cluster_link_options& link, int threads) {
  config.load<caf::io::middleman>();
  if (link.tls()) {
    config.load<caf::openssl::manager>();
    config.openssl_certificate = link.tls_certificate;
    config.openssl_key = link.tls_key;
    config.openssl_cafile = link.tls_ca_file;
    config.openssl_passphrase = link.tls_passphrase;
  }
  // docs/caf-0.17.md §6: work sharing and no middleman worker pool cut the latency of every hop between
  // processes several-fold on small machines.
  config.set("scheduler.policy", caf::atom("sharing"));
  config.set("scheduler.max-threads", size_t(std::max(1, threads)));
  config.set("middleman.workers", size_t(0));
  // §4: without heartbeats and a timeout on every node, a hung peer is never declared down.
  config.set("middleman.heartbeat-interval", caf::timespan{link.heartbeat});
  config.set("middleman.connection-timeout", caf::timespan{link.link_timeout});
  add_cluster_message_types(config);
}

void cluster_view::set_model(std::shared_ptr<const served_model> model,
                             std::shared_ptr<const engine::request_context> context) {
  std::lock_guard lock(mutex_);
  model_ = std::move(model);
  context_ = std::move(context);
}

std::shared_ptr<const served_model> cluster_view::model() const {
  std::lock_guard lock(mutex_);
  return model_;
}

std::shared_ptr<const engine::request_context> cluster_view::context() const {
  std::lock_guard lock(mutex_);
  return context_;
}

void cluster_view::set_nodes(std::vector<node_status> nodes) {
  std::lock_guard lock(mutex_);
  nodes_ = std::move(nodes);
}

std::vector<node_status> cluster_view::nodes() const {
  std::lock_guard lock(mutex_);
  return nodes_;
}

}  // namespace cluster
}  // namespace inflight
