// Opening a link to a published actor without letting an unreachable host stall the middleman: CAF 0.17's
// connect is a blocking ::connect() inside its middleman actor, which waits as long as the kernel retries
// SYNs (minutes for a host that drops packets) and delays every other connect meanwhile. So the dialer, on
// a thread of its own, first checks with a non-blocking connect and a deadline that something listens, and
// only then asks CAF (whose connect then completes at once).
#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "cluster_actors.hpp"

namespace inflight::cluster {

namespace {

// "" when a TCP connection to host:port opens within `timeout`, else what stopped it.
std::string probe_tcp(const std::string& host, uint16_t port, std::chrono::milliseconds timeout) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  if (const int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &found); rc != 0)
    return "cannot resolve " + host + ": " + ::gai_strerror(rc);
  std::string error = "no address for " + host;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      error = std::strerror(errno);
      continue;
    }
    int rc = ::connect(fd, a->ai_addr, a->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      rc = ::poll(&p, 1, int(std::max<int64_t>(0, left.count())));
      if (rc == 0) {
        error = "no answer within " + std::to_string(timeout.count()) + " ms";
      } else if (rc > 0) {
        int so_error = 0;
        socklen_t size = sizeof so_error;
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &size);
        if (so_error == 0) error.clear();
        else error = std::strerror(so_error);
      } else {
        error = std::strerror(errno);
      }
    } else if (rc == 0) {
      error.clear();
    } else {
      error = std::strerror(errno);
    }
    ::close(fd);
    if (error.empty()) break;
  }
  ::freeaddrinfo(found);
  return error;
}

}  // namespace

void spawn_dialer(caf::actor_system& system, const std::string& host, uint16_t port, bool tls,
                  std::chrono::milliseconds timeout, caf::actor owner, uint64_t tag) {
  // The values travel as spawn arguments, not as captures: CAF 0.17 binds a reference to a null tuple when a
  // function actor takes none (undefined behaviour that UBSan reports).
  system.spawn([](caf::blocking_actor* self, std::string host, uint16_t port, bool tls, std::chrono::milliseconds timeout,
                  caf::actor owner, uint64_t tag) {
    caf::actor_system& sys = self->system();
    std::string error = probe_tcp(host, port, timeout);
    caf::actor found;
    if (error.empty()) {
      const caf::io::middleman_actor middleman =
          tls ? sys.openssl_manager().actor_handle() : sys.middleman().actor_handle();
      self->request(middleman, timeout, caf::connect_atom::value, host, port)
          .receive(
              [&](const caf::node_id&, caf::strong_actor_ptr& handle, const std::set<std::string>&) {
                if (handle) found = caf::actor_cast<caf::actor>(handle);
                else error = "nothing is published there";
              },
              [&](caf::error& failure) {
                error = sys.render(failure);
                // A TLS handshake refused by either side ends in a disconnect during CAF's handshake.
                if (failure == caf::sec::disconnect_during_handshake)
                  error += tls ? " (TLS refused: check that both sides' certificates are signed by the other's CA)"
                               : " (is the peer using TLS, or not an inflight node?)";
              });
    }
    self->send(owner, dialed_atom::value, tag, found, error);
  }, host, port, tls, timeout, std::move(owner), tag);
}

}  // namespace inflight::cluster
