"""Scapy layers for Velocity/1 packets and frames: a second reading of the wire format,
written from the spec's tables without importing ``velocity.core``. The harness builds
known-answer vectors and fuzz inputs with them, and a test cross-checks them against the
reference codec on every packet and frame type."""
