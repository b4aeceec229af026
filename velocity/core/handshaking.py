"""The connection's side of its handshake: handshake bytes into the CRYPTO streams (with the
CRYPTO-policy seam), the handshake's events acted on (keys installed, completion, tickets,
fallback, learned keys), confirmation, when each side drops its Initial and Handshake keys
(VEL-PROT-013), and the peer's transport parameters applied. Functions over a
``Connection``, as the receiver and the sender are."""

from __future__ import annotations

from typing import TYPE_CHECKING

from velocity.core.errors import ErrorCode, TransportParameterError
from velocity.core.events import (
    ApplicationKeysInstalled,
    HandshakeConfirmed,
    TicketReceived,
)
from velocity.core.frames import Crypto
from velocity.core.handshake.common import (
    AuthMode,
    FallbackDirected,
    HandshakeCompleted,
    HandshakeEvent,
    KeysReady,
    ServerKeyLearned,
    TicketIssued,
)
from velocity.core.packet import EPOCHS, Epoch
from velocity.core.protection import PacketKeys
from velocity.core.state import State
from velocity.core.streams import is_unidirectional
from velocity.core.trace import describe, digest, type_name
from velocity.core.transport_params import TransportParameters, decode_transport_parameters

if TYPE_CHECKING:
    from velocity.core.connection import Connection


def server_done_with_handshake_keys(conn: Connection, *, one_rtt_packet: bool = False,
                                     one_rtt_ack: bool = False) -> None:
    """VEL-PROT-013: a server drops its Handshake keys once its handshake is complete and
    the client has its FINISHED: its Handshake CRYPTO data is acknowledged, or the client
    acknowledged a 1-RTT packet (a client reads 1-RTT only once the server's FINISHED
    verified), or, in PDK and resumption modes, any 1-RTT packet came (such a client
    sends 1-RTT only once complete; a discovery client sends it with its own FINISHED,
    before it has the server's). Without the 1-RTT rules a lost ACK of the FINISHED
    would keep the server probing forever, as the client drops its Handshake keys on
    HANDSHAKE_DONE."""
    summary = conn.handshake_summary
    if conn.is_client or summary is None or conn.spaces[Epoch.HANDSHAKE].discarded:
        return
    if (not conn.spaces[Epoch.HANDSHAKE].crypto_send.buffered or one_rtt_ack
            or (one_rtt_packet and summary.mode is not AuthMode.DISCOVERY)):
        discard_space(conn, Epoch.HANDSHAKE)


def confirm(conn: Connection) -> None:
    """Client: confirmed once HANDSHAKE_DONE arrived and the handshake is complete (a
    HANDSHAKE_DONE can overtake the server's FINISHED under loss)."""
    if conn._handshake_done_received and conn.handshake_complete and (
            not conn.handshake_confirmed):
        conn.handshake_confirmed = True
        discard_space(conn, Epoch.HANDSHAKE)
        conn._events.append(HandshakeConfirmed())


def pump(conn: Connection, now: float) -> None:
    """Move handshake output into CRYPTO streams and act on handshake events."""
    handshake = conn.handshake
    for epoch in EPOCHS:
        data = handshake.data_to_send(epoch)
        if data:
            write_crypto(conn, epoch, data)
    while (event := handshake.next_event()) is not None:
        _on_event(conn, event, now)
    if (not conn.is_client and not conn._peer_params_final
            and handshake.peer_transport_parameters):
        apply_peer_params(conn, handshake.peer_transport_parameters)


def write_crypto(conn: Connection, epoch: Epoch, data: bytes) -> None:
    """Handshake bytes into the space's CRYPTO stream; a CRYPTO policy (seam) decides
    how they are first sent, loss recovery resends them as usual."""
    space = conn.spaces[epoch]
    offset = space.crypto_send.write_offset
    space.crypto_send.write(data)
    policy = conn.seams.crypto_policy
    if policy is not None:
        conn.seams.injecting = True
        space.crypto_send.mark_sent(offset, offset + len(data))
        for pieces in policy(epoch, offset, data):
            space.injected.append((tuple(Crypto(at, piece) for at, piece in pieces), None,
                                   b""))


def _trace_event(conn: Connection, event: HandshakeEvent) -> None:
    if isinstance(event, KeysReady):
        owner = "client" if event.send == conn.is_client else "server"
        space = "0rtt" if event.early else {Epoch.INITIAL: "initial",
                                            Epoch.HANDSHAKE: "handshake",
                                            Epoch.APPLICATION: "1rtt"}[event.epoch]
        conn._trace("quic:key_updated", {"key_type": f"{owner}_{space}_secret",
                                         "trigger": "tls", "aead": event.aead.name,
                                         "secret": digest(event.secret)})
    else:
        conn._trace(f"velocity:{type_name(event)}", describe(event, kind=None))


def _on_event(conn: Connection, event: HandshakeEvent, now: float) -> None:
    if conn.tracer is not None:
        _trace_event(conn, event)
    if isinstance(event, KeysReady):
        keys = PacketKeys(event.secret, event.aead, event.hash_name)
        if event.early:
            if event.send:
                conn._zero_rtt_send = keys
            else:
                conn._zero_rtt_recv = keys
            conn.flow.early_limit = event.early_limit
            return
        space = conn.spaces[event.epoch]
        if event.send and conn.is_client and event.epoch == Epoch.APPLICATION:
            # a discovery client writes before the server's FINISHED: under the
            # parameters of ENCRYPTED_EXTENSIONS, which that FINISHED covers
            if not conn._peer_params_final:
                apply_peer_params(conn, conn.handshake.peer_transport_parameters)
            conn._events.append(ApplicationKeysInstalled())
        if event.send:
            space.send_keys = keys
        else:
            space.recv_keys = keys
        if conn.is_client and event.epoch == Epoch.HANDSHAKE and event.send:
            discard_space(conn, Epoch.INITIAL)
    elif isinstance(event, HandshakeCompleted):
        _on_completed(conn, event, now)
    elif isinstance(event, TicketIssued):
        params = conn.handshake.peer_transport_parameters
        conn._events.append(TicketReceived(event.ticket, params))
    elif isinstance(event, FallbackDirected):
        conn._events.append(event)
        if not conn.is_client:
            conn.close(ErrorCode.NO_APPLICATION_PROTOCOL, "fallback directed",
                       application=False)
    elif isinstance(event, ServerKeyLearned):
        conn._events.append(event)


def _on_completed(conn: Connection, event: HandshakeCompleted, now: float) -> None:
    conn.handshake_summary = event
    conn.handshake_complete = True
    if conn._early_crypto:  # 1-RTT CRYPTO that arrived before completion
        held, conn._early_crypto = bytes(conn._early_crypto), bytearray()
        conn.handshake.receive(Epoch.APPLICATION, held, now_ms=int(now * 1000))
    conn.state = State.CONNECTED
    conn.early_data_accepted = event.early_data_accepted
    if not conn._peer_params_final:
        apply_peer_params(conn, event.peer_transport_parameters)
    conn._events.append(event)
    if conn.is_client:
        conn.recovery.pto_count = 0  # the server has validated us: backoff may reset
        if conn._zero_rtt_frames and not event.early_data_accepted:
            _resend_rejected_early_data(conn)
        conn._zero_rtt_send = None
        confirm(conn)
    else:
        conn.handshake_confirmed = True
        conn._handshake_done_pending = True
        conn._zero_rtt_recv = None
        server_done_with_handshake_keys(conn)


def _resend_rejected_early_data(conn: Connection) -> None:
    """0-RTT data the server rejected goes again in 1-RTT (VEL-RES-008)."""
    for stream_id, start, stop, fin in conn._zero_rtt_frames:
        stream = conn.streams.get(stream_id)
        if stream is not None and stream.sender is not None:
            stream.sender.on_lost(start, stop, fin)
    conn._zero_rtt_frames.clear()


def apply_peer_params(conn: Connection, raw: bytes) -> None:
    params = decode_transport_parameters(raw, from_server=conn.is_client)
    if conn.is_client:
        expected = (conn.original_dcid, conn._first_server_scid, conn.retry_scid)
        actual = (params.original_destination_connection_id,
                  params.initial_source_connection_id, params.retry_source_connection_id)
        if actual != expected:
            raise TransportParameterError("connection ids do not match the packets",
                                          field="transport_parameters.connection_ids")
    elif params.initial_source_connection_id != conn.peer_cid:
        raise TransportParameterError("does not match the client's SCID",
                                      field="initial_source_connection_id")
    conn._peer_params_final = True
    if conn.tracer is not None:
        conn._trace("quic:parameters_set", {"owner": "remote", **describe(params, kind=None)})
    use_peer_params(conn, params)


def use_peer_params(conn: Connection, params: TransportParameters) -> None:
    conn.peer_params = params
    conn.flow.max_send = max(conn.flow.max_send, params.initial_max_data)
    conn._peer_streams_bidi = max(conn._peer_streams_bidi, params.initial_max_streams_bidi)
    conn._peer_streams_uni = max(conn._peer_streams_uni, params.initial_max_streams_uni)
    conn.recovery.max_ack_delay = params.max_ack_delay / 1000
    for stream in conn.streams.values():
        local = (stream.stream_id & 0x01) == (0 if conn.is_client else 1)
        if stream.sender is not None:
            limit = (params.initial_max_stream_data_uni
                     if is_unidirectional(stream.stream_id) else
                     params.initial_max_stream_data_bidi_remote if local else
                     params.initial_max_stream_data_bidi_local)
            stream.max_send = max(stream.max_send, limit)


def discard_space(conn: Connection, epoch: Epoch) -> None:
    space = conn.spaces[epoch]
    if space.discarded:
        return
    space.discarded = True
    space.send_keys = space.recv_keys = None
    conn.recovery.discard(epoch)
