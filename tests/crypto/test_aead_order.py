"""The AEAD order a client offers follows the CPU (VEL-PROF-010): AES-GCM first with AES
instructions (x86's aes flag, Arm's aes feature), ChaCha20-Poly1305 first without them."""

from __future__ import annotations

import pytest

from velocity.core.protection import Aead
from velocity.crypto import aead

X86 = ("processor\t: 0\nvendor_id\t: GenuineIntel\n"
       "flags\t\t: fpu vme sse sse2 ssse3 {aes} avx avx2 sha_ni\n\n")
ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm {aes} pmull sha1 sha2 crc32\n\n"


@pytest.mark.spec("VEL-PROF-010")
@pytest.mark.parametrize(("cpuinfo", "accelerated"), [
    (X86.format(aes="aes"), True), (X86.format(aes="vpclmulqdq"), False),
    (ARM.format(aes="aes"), True), (ARM.format(aes="pmull"), False),
    ("processor\t: 0\nmodel name\t: an AES-less CPU that says aes in its name\n", False),
    (None, True)], ids=["x86-aes", "x86-none", "arm-aes", "arm-none", "name-only", "no-file"])
def test_aes_instructions_are_read_from_cpuinfo(cpuinfo: str | None,
                                                accelerated: bool) -> None:
    assert aead.aes_accelerated(cpuinfo) is accelerated


@pytest.mark.spec("VEL-PROF-010")
@pytest.mark.parametrize(("accelerated", "first"), [
    (True, Aead.AES_128_GCM), (False, Aead.CHACHA20_POLY1305)])
def test_the_client_order_puts_the_fast_aead_first_and_offers_all_three(
        accelerated: bool, first: Aead, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aead, "cpu_accelerates_aes", lambda: accelerated)
    order = aead.client_aeads()
    assert order[0] is first and sorted(order) == sorted(Aead)
