"""Velocity/1: a QUIC-shaped UDP transport with a post-quantum hybrid (KEMTLS) handshake.

This package is the reference endpoint. ``velocity.core`` is the sans-I/O protocol;
everything that touches sockets, clocks or the OS lives outside it.
"""

__version__ = "0.1.0"
