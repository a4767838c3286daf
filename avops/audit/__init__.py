"""Tamper-evident audit log: RFC 6962 Merkle tree over every event that matters, signed tree heads, proofs."""
