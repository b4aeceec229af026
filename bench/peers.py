"""In-memory QUIC handshakes of the peer implementations we compare against: aioquic
(TLS 1.3, X25519) and qh3 (TLS 1.3, X25519MLKEM768). Both run a real client and server
QuicConnection exchanging datagrams in memory; ``server_seconds`` is the time spent inside
the server's calls only."""

from __future__ import annotations

import datetime as dt
import ssl
import time
from dataclasses import dataclass
from typing import Any

import aioquic.buffer
import aioquic.quic.configuration
import aioquic.quic.connection
import aioquic.quic.events
import aioquic.quic.packet
import qh3._hazmat
import qh3.quic.configuration
import qh3.quic.connection
import qh3.quic.events
import qh3.quic.packet
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ADDR = ("127.0.0.1", 4433)
# name -> (Buffer, events module, pull_quic_header, QuicConfiguration, QuicConnection)
MODULES: dict[str, tuple[Any, Any, Any, Any, Any]] = {
    "aioquic": (aioquic.buffer.Buffer, aioquic.quic.events, aioquic.quic.packet.pull_quic_header,
                aioquic.quic.configuration.QuicConfiguration,
                aioquic.quic.connection.QuicConnection),
    "qh3": (qh3._hazmat.Buffer, qh3.quic.events, qh3.quic.packet.pull_quic_header,
            qh3.quic.configuration.QuicConfiguration, qh3.quic.connection.QuicConnection),
}


@dataclass
class HandshakeTiming:
    total_seconds: float
    server_seconds: float
    server_bytes: int
    client_bytes: int


def _certificate() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


class QuicPeer:
    """One implementation: its modules and a server configuration built once."""

    def __init__(self, name: str, tmpdir: str) -> None:
        self.name = name
        (self._buffer, self._events, self._pull, self._configuration,
         self._connection) = MODULES[name]
        cert, key = _certificate()
        cert_path, key_path = f"{tmpdir}/{name}-cert.pem", f"{tmpdir}/{name}-key.pem"
        with open(cert_path, "wb") as handle:
            handle.write(cert)
        with open(key_path, "wb") as handle:
            handle.write(key)
        self._server_config = self._configuration(is_client=False, alpn_protocols=["bench"])
        self._server_config.load_cert_chain(cert_path, key_path)

    def handshake(self) -> HandshakeTiming:
        start = time.perf_counter()
        client = self._connection(configuration=self._configuration(
            is_client=True, alpn_protocols=["bench"], server_name="localhost",
            verify_mode=ssl.CERT_NONE))
        now = 0.0
        client.connect(ADDR, now=now)
        server: Any = None
        server_seconds, sizes = 0.0, {"client": 0, "server": 0}
        done = {"client": False, "server": False}
        for _ in range(20):
            outgoing = [data for data, _ in client.datagrams_to_send(now=now)]
            sizes["client"] += sum(map(len, outgoing))
            began = time.thread_time()
            for data in outgoing:
                if server is None:
                    header = self._pull(self._buffer(data=data), host_cid_length=8)
                    server = self._connection(
                        configuration=self._server_config,
                        original_destination_connection_id=header.destination_cid)
                server.receive_datagram(data, ADDR, now=now)
            replies = [data for data, _ in server.datagrams_to_send(now=now)]
            server_seconds += time.thread_time() - began
            sizes["server"] += sum(map(len, replies))
            for data in replies:
                client.receive_datagram(data, ADDR, now=now)
            for name, connection in (("client", client), ("server", server)):
                while (event := connection.next_event()) is not None:
                    if isinstance(event, self._events.HandshakeCompleted):
                        done[name] = True
            if all(done.values()):
                break
            now += 0.001
        if not all(done.values()):
            raise RuntimeError(f"{self.name} handshake did not complete")
        return HandshakeTiming(time.perf_counter() - start, server_seconds, sizes["server"],
                               sizes["client"])
