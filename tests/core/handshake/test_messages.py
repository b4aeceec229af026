"""Handshake message and transport-parameter codecs: round trips, and any input either
decodes or raises the protocol's own error naming the field."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from velocity.core.errors import ErrorCode, ProtocolError, TransportParameterError
from velocity.core.handshake import messages as m
from velocity.core.transport_params import (
    TransportParameters,
    decode_transport_parameters,
    encode_transport_parameters,
)

blobs = st.binary(max_size=40)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
alpns = st.lists(st.binary(min_size=1, max_size=12), min_size=1, max_size=4, unique=True)
extensions = st.lists(st.tuples(st.integers(5, 1 << 20), blobs), max_size=4,
                      unique_by=lambda e: e[0]).map(tuple)


@st.composite
def client_hellos(draw: st.DrawFn) -> m.ClientHello:
    profiles = draw(st.lists(u16, min_size=1, max_size=4, unique=True))
    return m.ClientHello(draw(st.binary(min_size=32, max_size=32)), tuple(draw(alpns)),
                         tuple(profiles), tuple(draw(st.lists(u16, min_size=1, max_size=3,
                                                              unique=True))),
                         draw(st.sampled_from(profiles)), draw(blobs), draw(extensions))


MESSAGES = {
    "CLIENT_HELLO": client_hellos(),
    "HELLO_RETRY": st.builds(m.HelloRetry, u16, extensions),
    "SERVER_HELLO": st.builds(m.ServerHello, st.binary(min_size=32, max_size=32), u16, u16,
                              blobs, st.integers(0, 1), st.integers(0, 1), extensions),
    "ENCRYPTED_EXTENSIONS": st.builds(m.EncryptedExtensions, st.binary(max_size=20), u16,
                                      st.just(((1, b"tp"), (3, b"\x01")))),
    "CERTIFICATE": st.builds(m.Certificate, st.lists(blobs, min_size=1, max_size=3).map(tuple)),
    "KEM_CIPHERTEXT": st.builds(m.KemCiphertext, blobs),
    "FINISHED": st.builds(m.Finished, st.binary(min_size=32, max_size=64)),
    "NEW_SESSION_TICKET": st.builds(m.NewSessionTicket, st.integers(0, 604800), u32,
                                    st.binary(max_size=8), st.binary(min_size=1, max_size=40),
                                    u32, extensions),
    "FALLBACK": st.builds(m.Fallback, st.binary(max_size=10), st.binary(max_size=20), u16,
                          st.integers(0, 5), blobs, st.integers(0, 1 << 20), blobs),
}


@pytest.mark.parametrize("name", MESSAGES)
def test_message_round_trip(name: str) -> None:
    @given(MESSAGES[name])
    def check(message: m.Message) -> None:
        raw = m.encode_message(message)
        assert raw[0] == m.MessageType[name]
        assert m.decode_message(raw[0], raw[4:]) == message

    check()


@pytest.mark.spec("VEL-HS-002", "VEL-EXT-002")
@given(st.sampled_from(list(m.MessageType)), st.binary(max_size=120))
def test_any_body_decodes_or_raises_a_named_protocol_error(msg_type: int, body: bytes) -> None:
    try:
        m.decode_message(msg_type, body)
    except ProtocolError as exc:
        assert exc.field


@pytest.mark.spec("VEL-EXT-002", "VEL-EXT-004", "VEL-HS-010", "VEL-HS-011")
def test_client_hello_list_rules() -> None:
    base = m.ClientHello(bytes(32), (b"velocity/1",), (0x11EC,), (1,), 0x11EC, b"x")
    bad = [
        (m.ClientHello(bytes(32), (), (0x11EC,), (1,), 0x11EC, b"x"), "DECODE_ERROR"),
        (m.ClientHello(bytes(32), (b"a", b"a"), (0x11EC,), (1,), 0x11EC, b"x"),
         "ILLEGAL_PARAMETER"),
        (m.ClientHello(bytes(32), (b"a",), (0x11EC,), (1,), 0x11ED, b"x"), "ILLEGAL_PARAMETER"),
        (m.ClientHello(bytes(32), (b"a",), (0x11EC,), (1,), 0x11EC, b"x",
                       ((4, b"psk"), (0, b"name"))), "ILLEGAL_PARAMETER"),
        (m.ClientHello(bytes(32), (b"a",), (0x11EC,), (1,), 0x11EC, b"x",
                       ((0, b"n"), (0, b"n"))), "ILLEGAL_PARAMETER"),
    ]
    assert m.decode_message(1, m.encode_message(base)[4:]) == base
    for hello, code in bad:
        raw = m.encode_message(hello)
        with pytest.raises(ProtocolError) as info:
            m.decode_message(raw[0], raw[4:])
        assert info.value.code.name == code, hello


def test_known_extension_in_the_wrong_message_is_illegal() -> None:
    raw = m.encode_message(m.EncryptedExtensions(b"velocity/1", 1, ((2, b"key"),)))
    with pytest.raises(ProtocolError) as info:
        m.decode_message(raw[0], raw[4:])
    assert info.value.code.name == "ILLEGAL_PARAMETER"


@pytest.mark.spec("VEL-HS-005")
def test_oversized_message_is_refused() -> None:
    reader = m.MessageReader()
    with pytest.raises(ProtocolError):
        reader.feed(bytes([1]) + (70000).to_bytes(3, "big"))
    reader = m.MessageReader()
    assert reader.feed(b"\x14\x00\x00\x02a") == []
    assert reader.feed(b"b") == [(0x14, b"ab", b"\x14\x00\x00\x02ab")]


params = st.builds(
    TransportParameters, st.none() | st.binary(max_size=20), st.integers(0, 1 << 30),
    st.integers(1200, 65527),
    st.integers(0, 1 << 40), st.integers(0, 1 << 30), st.integers(0, 1 << 30),
    st.integers(0, 1 << 30), st.integers(0, 1 << 60), st.integers(0, 1 << 60),
    st.integers(0, 20), st.integers(0, (1 << 14) - 1), st.booleans(), st.integers(2, 100),
    st.binary(max_size=20), st.none() | st.binary(max_size=20))


@pytest.mark.spec("VEL-TP-001", "VEL-TP-003")
@given(params)
def test_transport_parameters_round_trip(value: TransportParameters) -> None:
    assert decode_transport_parameters(encode_transport_parameters(value),
                                       from_server=True) == value


@pytest.mark.spec("VEL-TP-002")
def test_transport_parameter_errors() -> None:
    ok = TransportParameters(initial_source_connection_id=b"c")
    reset_token = b"\x02\x10" + bytes(16)  # stateless_reset_token: server-only (VEL-TP-005)
    cases = [
        (reset_token + encode_transport_parameters(ok), False, "transport_parameters.0x2"),
        (b"", True, "initial_source_connection_id"),
        (encode_transport_parameters(ok) + b"\x0f\x01c", True, "transport_parameters.0xf"),
        (b"\x03\x02\x44\xaf" + encode_transport_parameters(ok), True, "max_udp_payload_size"),
        (b"\x0a\x01\x15" + encode_transport_parameters(ok), True, "ack_delay_exponent"),
        (b"\x0e\x01\x01" + encode_transport_parameters(ok), True, "active_connection_id_limit"),
        (b"\x40\x01\x00" + encode_transport_parameters(ok), True, "transport_parameters.id"),
        (b"\x04\x05\x01", True, "transport_parameters.0x4"),
    ]
    for data, from_server, field in cases:
        with pytest.raises(TransportParameterError) as info:
            decode_transport_parameters(data, from_server=from_server)
        assert info.value.field == field, (data, info.value)
    grease = encode_transport_parameters(ok.with_changes(grease=b"ignored"))
    assert decode_transport_parameters(grease, from_server=False) == ok


@pytest.mark.spec("VEL-TP-005")
def test_a_servers_stateless_reset_token_is_ignored() -> None:
    """Velocity/1 has no stateless reset: the parameter is never sent, and a server's is
    ignored like an unknown id (a malformed one too: it is never parsed)."""
    ok = TransportParameters(initial_source_connection_id=b"c")
    assert b"\x02\x10" not in encode_transport_parameters(ok)
    for token in (bytes(16), b"short"):
        sent = bytes([0x02, len(token)]) + token + encode_transport_parameters(ok)
        assert decode_transport_parameters(sent, from_server=True) == ok


@pytest.mark.spec("VEL-HS-081", "VEL-EXT-002")
def test_new_session_ticket_takes_no_known_extension() -> None:
    """max_early_data is the one early-data signal of NEW_SESSION_TICKET; an early_data
    extension there is ILLEGAL_PARAMETER (GREASE is still ignored)."""
    ticket = m.NewSessionTicket(3600, 7, b"n", b"ticket", 1024, ((0x3A, b"grease"),))
    assert m.decode_message(m.MessageType.NEW_SESSION_TICKET,
                            m.encode_message(ticket)[4:]) == ticket
    bad = m.NewSessionTicket(3600, 7, b"n", b"ticket", 0,
                             ((int(m.ExtensionType.EARLY_DATA), b""),))
    with pytest.raises(ProtocolError) as info:
        m.decode_message(m.MessageType.NEW_SESSION_TICKET, m.encode_message(bad)[4:])
    assert info.value.code == ErrorCode.ILLEGAL_PARAMETER
