// The cluster handshake's primitives (actors/cluster_auth): HMAC-SHA256 and SHA-256 against published
// vectors, and the properties the handshake relies on: proofs bind the secret, the role and both nonces.
#include <doctest/doctest.h>

#include <set>
#include <string>

#include "cluster_auth.hpp"

using namespace inflight::cluster;

TEST_CASE("HMAC-SHA256 and SHA-256 match RFC 4231 and FIPS 180-2 vectors") {
  CHECK(hmac_sha256_hex(std::string(20, '\x0b'), "Hi There") ==
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
  CHECK(hmac_sha256_hex("Jefe", "what do ya want for nothing?") ==
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST_CASE("proofs depend on the secret, the role, both nonces and the verifier") {
  const std::string g = random_nonce(), n = random_nonce();
  const std::string node = make_proof("s3cret", proof_role::node, g, n, "gw");
  CHECK(node.size() == 64);
  CHECK(proofs_equal(node, make_proof("s3cret", proof_role::node, g, n, "gw")));
  CHECK_FALSE(proofs_equal(node, make_proof("s3cret", proof_role::gateway, g, n, "gw")));  // no echoing back
  CHECK_FALSE(proofs_equal(node, make_proof("s3creT", proof_role::node, g, n, "gw")));
  CHECK_FALSE(proofs_equal(node, make_proof("s3cret", proof_role::node, random_nonce(), n, "gw")));  // no replay
  CHECK_FALSE(proofs_equal(node, make_proof("s3cret", proof_role::node, g, random_nonce(), "gw")));
  CHECK(make_proof("", proof_role::node, g, n, "gw").empty());  // no secret, no proof
  // Bound to the process that checks it: a proof obtained by posing as a node to gateway "gw" is
  // worthless when relayed to another process.
  CHECK_FALSE(proofs_equal(node, make_proof("s3cret", proof_role::node, g, n, "relay")));
  CHECK_FALSE(proofs_equal(node, ""));
  CHECK_FALSE(proofs_equal(node, node.substr(0, 63)));
}

TEST_CASE("nonces are 32 hex digits and do not repeat") {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    const std::string nonce = random_nonce();
    CHECK(nonce.size() == 32);
    CHECK(nonce.find_first_not_of("0123456789abcdef") == std::string::npos);
    seen.insert(nonce);
  }
  CHECK(seen.size() == 1000);
}
