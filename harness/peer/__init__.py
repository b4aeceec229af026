"""The scripted peer: a velocity.core endpoint driven over real UDP by the reference's own
asyncio drivers, with the core's seams (velocity.core.seams) open to the scenario engine, so
it can send what a normal peer never would, and a recorder of the harness's view of the
wire. ``ClientPeer`` tests servers; ``ServerPeer`` tests clients. ``hostile`` holds the
ready-made hostile inputs (key shares, CRYPTO policies, packet mutators, message edits)."""

from harness.peer.client import ClientPeer, RawPeer
from harness.peer.server import ServerPeer
from harness.peer.view import View

__all__ = ["ClientPeer", "RawPeer", "ServerPeer", "View"]
