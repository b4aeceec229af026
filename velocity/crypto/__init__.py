"""Cryptographic backends (ML-KEM, ML-DSA) and the PKI: certificates, key files, tickets and
tokens. The protocol core reaches these only through the small interfaces it defines."""
