"""Peer servers for issue 5's benchmark (`loadtest/bench.py`); each is started pinned
to the server core and stopped by PID. They speak the same tiny dialect as Herald's
WebSocket protocol where they can: `{"op":"subscribe","topic":T}` -> `{"op":"subscribed"}`,
`{"op":"publish","topic":T,"data":D}` -> every subscriber of T gets `{"topic":T,"data":D}`."""
