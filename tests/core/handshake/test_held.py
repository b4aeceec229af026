"""What a half-open discovery handshake holds once its server flight is sent: the
CERTIFICATE message is encoded once per static key and shared, and the transcript keeps
only its running hash, not the messages (a table of half-open connections would hold each
one's ClientHello, ServerHello and certificate chain again)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from harness.pair import PairSpec, make_pair, run_handshake
from tests.core.handshake.helpers import completed
from velocity.core.errors import InternalError
from velocity.core.handshake.client import ClientHandshake
from velocity.core.handshake.messages import Certificate, Message, encode_message
from velocity.core.handshake.server import ServerHandshake
from velocity.core.packet import Epoch


def server_flight(client: ClientHandshake, server: ServerHandshake) -> bytes:
    client.start(now_ms=0)
    server.receive(Epoch.INITIAL, client.data_to_send(Epoch.INITIAL), now_ms=0)
    return server.data_to_send(Epoch.HANDSHAKE)


def test_the_certificate_message_is_encoded_once_per_key() -> None:
    client, server = make_pair(PairSpec(mode="discovery"))
    key = server.config.static_keys[0]
    assert key.certificate_message is key.certificate_message
    assert key.certificate_message == encode_message(Certificate(key.certificate_chain))
    assert key.certificate_message in server_flight(client, server)


def test_a_hook_that_rewrites_the_certificate_is_sent_its_own_encoding() -> None:
    client, server = make_pair(PairSpec(mode="discovery"))
    key = server.config.static_keys[0]
    chain = (b"another chain",)

    def rewrite(message: Message) -> Message:
        return Certificate(chain) if isinstance(message, Certificate) else message

    server.message_hook = rewrite
    flight = server_flight(client, server)
    assert encode_message(Certificate(chain)) in flight
    assert key.certificate_message not in flight


def test_a_rotated_key_gets_its_own_certificate_message() -> None:
    _, server = make_pair(PairSpec(mode="discovery"))
    key = server.config.static_keys[0]
    rotated = replace(key, certificate_chain=(b"renewed leaf",))
    assert rotated.certificate_message == encode_message(Certificate((b"renewed leaf",)))
    assert key.certificate_message != rotated.certificate_message


def test_the_transcript_forgets_its_messages_once_the_server_flight_is_sent() -> None:
    client, server = make_pair(PairSpec(mode="discovery"))
    server_flight(client, server)
    with pytest.raises(InternalError):
        server.transcript.messages  # noqa: B018
    client, server = make_pair(PairSpec(mode="discovery"))
    client_done, server_done = completed(run_handshake(client, server))  # digests agree
    assert client_done.key_id == server_done.key_id
