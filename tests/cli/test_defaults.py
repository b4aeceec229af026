"""What the CLI shows its users that the wire does not carry: the lab's default port, the
Retry policies a server offers, the certificate fingerprint."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from velocity.cli import cli
from velocity.core.entropy import SeededEntropy
from velocity.core.hybrid import BALANCED
from velocity.crypto.identity import ServerIdentity


@pytest.mark.spec("VEL-GEN-002", "VEL-RTY-007")
def test_serve_listens_on_the_lab_port_and_offers_the_three_retry_policies() -> None:
    shown = " ".join(CliRunner().invoke(cli, ["serve", "--help"]).output.split())
    assert "[default: 127.0.0.1:4433]" in shown
    assert "--retry [never|always|under-load]" in shown


@pytest.mark.spec("VEL-CERT-006")
def test_keys_show_gives_the_sha256_of_the_leaf_der_in_hex(tmp_path: Path) -> None:
    identity = ServerIdentity.create(BALANCED, entropy=SeededEntropy(5), names=("localhost",),
                                     now=dt.datetime.now(dt.UTC))
    identity.save(tmp_path / "public" / ".velocity" / "certs")
    result = CliRunner().invoke(cli, ["keys", "show", "--root", str(tmp_path / "public"),
                                      "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    leaf = x509.load_pem_x509_certificate(Path(shown["leaf"]).read_bytes())
    der = leaf.public_bytes(Encoding.DER)
    assert shown["fingerprint"] == hashlib.sha256(der).hexdigest()
