"""Tickets, PSK binders, 0-RTT and anti-replay (spec section 14)."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import replace

import pytest

from harness.pair import PairSpec, make_pair, run_handshake
from tests.core.handshake.helpers import closed_with, completed, events_of, rewrite, secrets
from velocity.core.errors import ErrorCode
from velocity.core.handshake.common import (
    AuthMode,
    ReplayFilter,
    SessionTicket,
    TicketIssued,
)
from velocity.core.handshake.messages import (
    ClientHello,
    ExtensionType,
    MessageType,
    decode_message,
)
from velocity.core.hybrid import BALANCED, LIGHT, PROFILES, Profile
from velocity.core.packet import Epoch
from velocity.crypto.sealing import ticket_sealer

SEALER = ticket_sealer(bytes(32))


def first_ticket(profile: Profile = BALANCED, mode: str = "discovery", *,
                 now_ms: int = 1_000) -> SessionTicket:
    client, server = make_pair(PairSpec(profile, mode, seed="ticket",
                                        server={"ticket_sealer": SEALER}))
    run = run_handshake(client, server, now_ms=now_ms)
    completed(run)
    (issued,) = events_of(run.client_events, TicketIssued)
    return issued.ticket


def resume(ticket: SessionTicket, *, early: bool, now_ms: int = 3_000, seed: str = "resume",
           replay: ReplayFilter | None = None, profile: Profile = BALANCED,
           **kwargs: object) -> tuple:  # type: ignore[type-arg]
    client, server = make_pair(PairSpec(profile, "discovery", seed=seed, client={
        "ticket": ticket, "early_data": early}, server={
        "ticket_sealer": SEALER, "replay_filter": replay or ReplayFilter(), **kwargs}))
    return run_handshake(client, server, now_ms=now_ms), client, server


@pytest.mark.spec("VEL-RES-001", "VEL-RES-003", "VEL-RES-004", "VEL-HS-080")
@pytest.mark.parametrize("profile", PROFILES.values(), ids=lambda p: p.name)
def test_resumption_without_early_data(profile: Profile) -> None:
    run, _, _ = resume(first_ticket(profile), early=False, profile=profile)
    client_done, server_done = completed(run)
    assert client_done.mode == server_done.mode == AuthMode.RESUMPTION
    assert not client_done.early_data_accepted
    kinds = [m[0] for f in run.flights for m in f.messages]
    assert MessageType.CERTIFICATE not in kinds and MessageType.KEM_CIPHERTEXT not in kinds
    assert events_of(run.client_events, TicketIssued), "a resumed connection gets a new ticket"


@pytest.mark.spec("VEL-RES-006", "VEL-HS-041")
def test_zero_rtt_is_accepted_once_and_keys_agree() -> None:
    run, _, _ = resume(first_ticket(), early=True)
    client_done, server_done = completed(run)
    assert client_done.early_data_accepted and server_done.early_data_accepted
    client_keys, server_keys = secrets(run.client_events), secrets(run.server_events)
    assert client_keys[(Epoch.APPLICATION, True, True)] == server_keys[
        (Epoch.APPLICATION, False, True)]


@pytest.mark.spec("VEL-RES-007", "VEL-RES-008")
def test_replayed_client_hello_has_its_early_data_rejected() -> None:
    ticket, shared = first_ticket(), ReplayFilter()
    first, _, _ = resume(ticket, early=True, seed="same", replay=shared)
    replayed, _, _ = resume(ticket, early=True, seed="same", replay=shared)
    assert completed(first)[1].early_data_accepted
    client_done, server_done = completed(replayed)
    assert not client_done.early_data_accepted and not server_done.early_data_accepted
    assert (Epoch.APPLICATION, False, True) not in secrets(replayed.server_events)


def test_full_filter_rejects_rather_than_forgets() -> None:
    replay = ReplayFilter(capacity=1)
    assert replay.accept(b"a", 0, 10_000)
    assert not replay.accept(b"b", 1, 10_001)
    assert not replay.accept(b"a", 2, 10_002)
    assert replay.accept(b"b", 10_001, 20_001)


def test_expire_forgets_stale_binders_and_gives_back_the_room_they_took() -> None:
    """A burst of binders that all expired: ``expire`` (a server's periodic call, no hello
    needed) forgets them and rebuilds the dict, which would keep the size it grew to; one
    still fresh is still refused."""
    replay = ReplayFilter()
    for index in range(1000):
        assert replay.accept(index.to_bytes(32, "big"), 0, 10_000)
    assert replay.accept(b"fresh", 0, 30_000)
    grown = sys.getsizeof(replay._seen)
    replay.expire(10_001)
    assert sys.getsizeof(replay._seen) * 50 < grown
    assert replay.accept((1).to_bytes(32, "big"), 10_002, 20_000)
    assert not replay.accept(b"fresh", 10_003, 40_000)


@pytest.mark.spec("VEL-RES-007")
def test_filter_keeps_a_binder_until_its_hello_is_no_longer_fresh() -> None:
    """Entries expire at their own freshness deadline, not in arrival order."""
    replay = ReplayFilter()
    assert replay.accept(b"late", 0, 20_000)
    assert replay.accept(b"early", 1, 5_000)
    assert not replay.accept(b"early", 5_000, 15_000)
    assert replay.accept(b"early", 5_001, 15_001)
    assert not replay.accept(b"late", 19_999, 30_000)


@pytest.mark.spec("VEL-RES-005", "VEL-RES-007")
@pytest.mark.parametrize("skew_ms", [-9_000, 0, 9_000])
def test_replay_is_refused_for_as_long_as_its_age_is_accepted(skew_ms: int) -> None:
    """A ClientHello's age passes for up to 20 s of server time (within 10 s either side of
    the server's view): the same bytes replayed at any moment they would pass the age check
    have their early data refused, whatever the client's clock skew. Before the fix the
    filter forgot binders after 10 s."""
    ticket, shared = first_ticket(), ReplayFilter()  # issued at 1 s
    skewed = replace(ticket, issued_ms=ticket.issued_ms - skew_ms)  # client age + skew
    client, _ = make_pair(PairSpec(mode="discovery", seed="replay", client={
        "ticket": skewed, "early_data": True}))
    client.start(now_ms=20_000)
    hello = client.data_to_send(Epoch.INITIAL)

    def early_accepted(now_ms: int) -> bool:
        _, server = make_pair(PairSpec(mode="discovery", seed="replay", server={
            "ticket_sealer": SEALER, "replay_filter": shared}))
        server.receive(Epoch.INITIAL, hello, now_ms=now_ms)
        return server.early_data_accepted

    assert early_accepted(20_000)
    last_fresh = 30_000 + skew_ms  # the server's age exceeds the client's by 10 s after it
    for now_ms in (20_001, last_fresh - 1, last_fresh, last_fresh + 1):
        assert not early_accepted(now_ms), now_ms


@pytest.mark.spec("VEL-RES-005")
def test_early_data_outside_the_freshness_window_is_rejected() -> None:
    ticket = first_ticket()
    skewed = replace(ticket, issued_ms=ticket.issued_ms + 20_000)
    run, _, _ = resume(skewed, early=True, now_ms=40_000)
    client_done, _ = completed(run)
    assert not client_done.early_data_accepted
    run, _, _ = resume(ticket, early=True, now_ms=1_000 + 86_401_000)
    client_done, server_done = completed(run)
    assert server_done.mode == AuthMode.DISCOVERY, "an expired ticket is a full handshake"


@pytest.mark.spec("VEL-RES-003")
def test_wrong_binder_is_bad_binder() -> None:
    def flip_binder(message: ClientHello) -> ClientHello:
        extensions = list(message.extensions)
        ext_type, value = extensions[-1]
        assert ext_type == ExtensionType.PRE_SHARED_KEY
        extensions[-1] = (ext_type, value[:-1] + bytes([value[-1] ^ 1]))
        return replace(message, extensions=tuple(extensions))

    client, server = make_pair(PairSpec(mode="discovery", seed="binder", client={
        "ticket": first_ticket(), "early_data": False}, server={"ticket_sealer": SEALER}))
    run = run_handshake(client, server, tamper=rewrite(MessageType.CLIENT_HELLO, flip_binder))
    closed_with(run, ErrorCode.BAD_BINDER, "server")


def test_unknown_ticket_falls_back_to_a_full_handshake() -> None:
    ticket = replace(first_ticket(), ticket=b"\x09" * 80)
    run, _, _ = resume(ticket, early=True)
    client_done, server_done = completed(run)
    assert server_done.mode == AuthMode.DISCOVERY and not client_done.early_data_accepted


def test_ticket_whose_profile_the_server_now_refuses_is_dropped_after_hello_retry() -> None:
    ticket = first_ticket(LIGHT)
    run, _, _ = resume(ticket, early=True, profile=BALANCED, profiles=(BALANCED,))
    client_done, server_done = completed(run)
    assert [m[0] for m in run.flights[1].messages] == [MessageType.HELLO_RETRY]
    assert client_done.mode == server_done.mode == AuthMode.DISCOVERY
    assert client_done.profile == "balanced" and not client_done.early_data_accepted


@pytest.mark.spec("VEL-HS-041")
def test_early_data_offered_with_a_ticket_the_server_cannot_use_is_answered_0() -> None:
    """The client indicated early data, the server could not open the ticket: a full
    handshake whose ENCRYPTED_EXTENSIONS still carries early_data = 0 (it said nothing)."""
    ticket = replace(first_ticket(), ticket=b"\x09" * 80)
    run, _, _ = resume(ticket, early=True)
    completed(run)
    extensions = [m for f in run.flights for m in f.messages
                  if m[0] == MessageType.ENCRYPTED_EXTENSIONS]
    (ee,) = extensions
    decoded = decode_message(ee[0], ee[4:])
    assert decoded.extension(ExtensionType.EARLY_DATA) == b"\x00"  # type: ignore[union-attr]


@pytest.mark.spec("VEL-RES-005")
def test_a_ticket_issued_in_the_servers_future_is_not_taken() -> None:
    """A ticket whose issue time lies more than the 10 s tolerance in the server's future
    (a clock that jumped back, another instance's clock) gives a full handshake."""
    ticket = first_ticket(now_ms=60_000)
    run, _, _ = resume(ticket, early=False, now_ms=60_000 - 9_000)
    assert completed(run)[1].mode == AuthMode.RESUMPTION
    run, _, _ = resume(ticket, early=False, now_ms=60_000 - 11_000)
    assert completed(run)[1].mode == AuthMode.DISCOVERY


@pytest.mark.spec("VEL-KS-006")
def test_a_resumed_handshake_forgets_the_old_psk() -> None:
    run, client, server = resume(first_ticket(), early=True)
    completed(run)
    assert client._ticket is None and server._ticket_state is None
    assert server._psk_offer is None


@pytest.mark.spec("VEL-RES-011")
@pytest.mark.parametrize("profile", PROFILES.values(), ids=lambda p: p.name)
def test_age_add_is_derived_from_the_psk(profile: Profile) -> None:
    """The client only adds age_add; the reference server recovers it from the PSK:
    u32(SHA-256("age_add" || PSK)[0..4]), computed here with hashlib."""
    ticket = first_ticket(profile)
    digest = hashlib.sha256(b"age_add" + ticket.psk).digest()
    assert ticket.age_add == int.from_bytes(digest[:4], "big")


@pytest.mark.spec("VEL-RES-010")
def test_a_server_without_an_anti_replay_filter_accepts_no_early_data() -> None:
    """Instances that share ticket keys but no filter must refuse 0-RTT: the reference
    server accepts early data only through its (one, shared) replay filter."""
    ticket = first_ticket()
    client, server = make_pair(PairSpec(mode="discovery", seed="no-filter", client={
        "ticket": ticket, "early_data": True}, server={"ticket_sealer": SEALER,
                                                       "replay_filter": None}))
    client_done, server_done = completed(run_handshake(client, server, now_ms=3_000))
    assert server_done.mode == AuthMode.RESUMPTION
    assert not client_done.early_data_accepted and not server_done.early_data_accepted
