// The shared-secret handshake between a gateway and an engine node, as plain functions (no CAF): both sides
// prove that they know the cluster secret without sending it, over a link an eavesdropper may read.
//
//   gateway ── hello{version, gateway_nonce} ──────────────────────────────▶ node
//   gateway ◀── challenge{version, node_nonce, node_proof} ───────────────── node
//   gateway ── proof{gateway_proof} ───────────────────────────────────────▶ node
//   gateway ◀── welcome{model card} or refusal ──────────────────────────── node
//
//   node_proof    = HMAC-SHA256(secret, "inflight-node"    | gateway_nonce | node_nonce | gateway's node id)
//   gateway_proof = HMAC-SHA256(secret, "inflight-gateway" | gateway_nonce | node_nonce | node's node id)
//
// Each side picks a fresh random nonce per handshake, so a recorded proof is worthless later (no replay),
// and the role label keeps one side's proof from being echoed back as the other's. Each proof names the
// CAF node id of the process it is meant for (the verifier checks it against its own id), so a peer cannot
// pass on a proof it obtained by posing as a node to a gateway (or the reverse): it is bound to that peer.
// What this does not stop: CAF's transport (BASP) has no authentication of its own, node ids are what a
// peer says they are, and CAF routes messages through intermediate nodes. An active attacker on the path
// can therefore sit between an authenticated gateway and a node, or claim an authenticated gateway's node
// id. The secret keeps out peers that do not know it (a foreign or misconfigured gateway, a scanner); on a
// network with active attackers, TLS with certificates on both sides is what protects the links. Proofs are compared in
// constant time. The secret protects who may use a node; it does not encrypt the traffic (prompts and
// outputs cross in the clear): for that, give the nodes and the gateway TLS certificates.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace inflight::cluster {

// 16 random bytes from OpenSSL's CSPRNG, as 32 hex digits.
std::string random_nonce();

enum class proof_role { node, gateway };

// Hex HMAC-SHA256 of the role label, both nonces and `verifier` (the CAF node id, as text, of the process
// that will check the proof) under `secret`. Empty secret: empty proof (no authentication configured).
std::string make_proof(std::string_view secret, proof_role role, std::string_view gateway_nonce,
                       std::string_view node_nonce, std::string_view verifier);

// Compares two proofs in time that depends only on their lengths.
bool proofs_equal(std::string_view a, std::string_view b);

// Hex HMAC-SHA256 / SHA-256, exposed for the tests (RFC 4231 vectors) and the model fingerprint.
std::string hmac_sha256_hex(std::string_view key, std::string_view message);
std::string sha256_hex(std::string_view data);

}  // namespace inflight::cluster
