// HMAC-SHA256 and the CSPRNG from OpenSSL's libcrypto (Debian's libssl-dev), which CAF's TLS module links
// against already.
#include "cluster_auth.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <array>
#include <stdexcept>

namespace inflight::cluster {

namespace {

std::string to_hex(const unsigned char* bytes, size_t size) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out(size * 2, '0');
  for (size_t i = 0; i < size; ++i) {
    out[2 * i] = digits[bytes[i] >> 4];
    out[2 * i + 1] = digits[bytes[i] & 15];
  }
  return out;
}

}  // namespace

std::string random_nonce() {
  std::array<unsigned char, 16> bytes{};
  if (RAND_bytes(bytes.data(), int(bytes.size())) != 1) throw std::runtime_error("cluster: no random bytes from OpenSSL");
  return to_hex(bytes.data(), bytes.size());
}

std::string hmac_sha256_hex(std::string_view key, std::string_view message) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int size = 0;
  if (HMAC(EVP_sha256(), key.data(), int(key.size()), reinterpret_cast<const unsigned char*>(message.data()),
           message.size(), digest.data(), &size) == nullptr)
    throw std::runtime_error("cluster: HMAC-SHA256 failed");
  return to_hex(digest.data(), size);
}

std::string sha256_hex(std::string_view data) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int size = 0;
  if (EVP_Digest(data.data(), data.size(), digest.data(), &size, EVP_sha256(), nullptr) != 1)
    throw std::runtime_error("cluster: SHA-256 failed");
  return to_hex(digest.data(), size);
}

std::string make_proof(std::string_view secret, proof_role role, std::string_view gateway_nonce,
                       std::string_view node_nonce, std::string_view verifier) {
  if (secret.empty()) return {};
  std::string message = role == proof_role::node ? "inflight-node|" : "inflight-gateway|";
  message.append(gateway_nonce).append("|").append(node_nonce).append("|").append(verifier);
  return hmac_sha256_hex(secret, message);
}

bool proofs_equal(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace inflight::cluster
