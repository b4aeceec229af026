"""The CLIENT_HELLO hook as the transport-parameter scenarios use it: a message's
extensions are set from ``[[type, bytes], ...]``, replacing the ones the client built, and a
value of another shape is refused with a message a scenario author acts on."""

from __future__ import annotations

from dataclasses import replace

import pytest

from harness.scenario.build import check_hooks, message_hook
from velocity.core.handshake.messages import ClientHello

HELLO = ClientHello(bytes(32), (b"velocity/1",), (0x11EC,), (1,), 0x11EC, b"share",
                    ((0, b"localhost"), (1, b"\x0f\x08harness!")))


def test_extensions_are_set_from_type_and_bytes_pairs() -> None:
    hook = message_hook({"CLIENT_HELLO": {"set": {"extensions": [
        [1, {"hex": "0f00"}], [27, {"repeat": "g", "count": 3}]]}}})
    assert hook(HELLO) == replace(HELLO, extensions=((1, b"\x0f\x00"), (27, b"ggg")))


@pytest.mark.parametrize("value", [[[1]], [1, "x"], "0f00", [[1, 2]]])
def test_extensions_of_another_shape_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="CLIENT_HELLO, field extensions: "):
        check_hooks({"message": {"CLIENT_HELLO": {"set": {"extensions": value}}}})
