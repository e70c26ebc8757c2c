// Works around a bug in CAF 0.17's OpenSSL module (libcaf_openssl, caf::openssl::session): when a TLS
// handshake fails (a plaintext or otherwise broken client on a node's port), the session gives up without
// draining OpenSSL's per-thread error queue. All TLS sessions of a process run on the middleman's one
// multiplexer thread, so the next SSL_read of a healthy link that merely has no data yet (WANT_READ) makes
// SSL_get_error report the stale error, and CAF closes that healthy link: anyone able to reach the port
// could cut every gateway's link to the node. OpenSSL requires an empty error queue before each TLS I/O
// call (SSL_get_error(3)); CAF does not empty it, so we do, by interposing the four calls CAF makes. The
// executable's definitions take precedence over libssl's for libcaf_openssl's dynamic references; each one
// empties the queue and calls the real function (dlsym RTLD_NEXT). This file must be linked into the
// executable itself (not an archive, whose member nothing would pull in).
#include <dlfcn.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <cstdio>
#include <cstdlib>

namespace {

template <class Function>
Function real(const char* name) {
  void* symbol = dlsym(RTLD_NEXT, name);
  if (symbol == nullptr) {
    std::fprintf(stderr, "inflight: cannot find libssl's %s: %s\n", name, dlerror());
    std::abort();
  }
  return reinterpret_cast<Function>(symbol);
}

}  // namespace

extern "C" {

int SSL_read(SSL* ssl, void* buffer, int size) {
  static const auto function = real<int (*)(SSL*, void*, int)>("SSL_read");
  ERR_clear_error();
  return function(ssl, buffer, size);
}

int SSL_write(SSL* ssl, const void* buffer, int size) {
  static const auto function = real<int (*)(SSL*, const void*, int)>("SSL_write");
  ERR_clear_error();
  return function(ssl, buffer, size);
}

int SSL_accept(SSL* ssl) {
  static const auto function = real<int (*)(SSL*)>("SSL_accept");
  ERR_clear_error();
  return function(ssl);
}

int SSL_connect(SSL* ssl) {
  static const auto function = real<int (*)(SSL*)>("SSL_connect");
  ERR_clear_error();
  return function(ssl);
}

}  // extern "C"
