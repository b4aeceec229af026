"""The AEAD order a client offers (VEL-PROF-010): AES-GCM first where the CPU accelerates
AES, ChaCha20-Poly1305 first otherwise (it is faster in software, and constant-time where
AES without hardware support is not). Acceleration is read from /proc/cpuinfo (x86's
``aes`` flag, Arm's ``aes`` feature); where that file cannot be read (not Linux) AES is
taken to be accelerated, as on every x86-64 CPU since 2010 and on Apple silicon."""

from __future__ import annotations

import functools
from pathlib import Path

from velocity.core.protection import Aead

CPUINFO = Path("/proc/cpuinfo")
AES_FIRST = (Aead.AES_128_GCM, Aead.AES_256_GCM, Aead.CHACHA20_POLY1305)
CHACHA_FIRST = (Aead.CHACHA20_POLY1305, Aead.AES_128_GCM, Aead.AES_256_GCM)


def aes_accelerated(cpuinfo: str | None) -> bool:
    """Whether ``cpuinfo`` (the text of /proc/cpuinfo; None: unreadable) lists AES
    instructions."""
    if cpuinfo is None:
        return True
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features") and "aes" in value.split():
            return True
    return False


@functools.cache
def cpu_accelerates_aes() -> bool:
    """Whether this machine's CPU has AES instructions."""
    try:
        cpuinfo: str | None = CPUINFO.read_text(errors="replace")
    except OSError:
        cpuinfo = None
    return aes_accelerated(cpuinfo)


def client_aeads() -> tuple[Aead, ...]:
    """This machine's AEAD order for a client's CLIENT_HELLO."""
    return AES_FIRST if cpu_accelerates_aes() else CHACHA_FIRST
