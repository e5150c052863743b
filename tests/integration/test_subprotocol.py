"""Subprotocol negotiation with a real client (issue 9): browsers, `ws` and Node
abort a connection when the server ignores the subprotocol they asked for."""

from __future__ import annotations

import json

import pytest
from websockets.exceptions import InvalidStatus

from procs import HeraldServer
from wsclient import connect, recv_json

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("offer", [["herald.v1"], ["chat", "herald.v1"]])
async def test_herald_v1_is_selected_when_offered(server: HeraldServer, offer: list[str]) -> None:
    ws = await connect(server.ws, subprotocols=offer)
    try:
        assert ws.subprotocol == "herald.v1"
        await ws.send('{"op":"ping","id":1}')
        assert await recv_json(ws) == {"op": "pong", "id": 1}
    finally:
        await ws.close()


async def test_no_offer_is_accepted_without_a_subprotocol(server: HeraldServer) -> None:
    ws = await connect(server.ws)
    try:
        assert ws.subprotocol is None
    finally:
        await ws.close()


async def test_only_other_subprotocols_get_400_naming_herald_v1(server: HeraldServer) -> None:
    with pytest.raises(InvalidStatus) as info:
        await connect(server.ws, subprotocols=["mqtt", "chat"])
    response = info.value.response
    assert response.status_code == 400
    error = json.loads(response.body)["error"]
    assert error["code"] == "invalid_request" and "herald.v1" in error["message"]
