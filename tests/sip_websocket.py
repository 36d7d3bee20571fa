#!/usr/bin/env python3
"""SIP over WebSocket (RFC 7118) on loopback with Python's websockets
(Debian's python3-websockets): a server and a client on 127.0.0.1:PORT
with the `sip` subprotocol exchange COUNT requests and their responses.
Every third request goes over three frames (continuation frames); a ping
follows every fourth. MODE: `plain` (no extension), `deflate`
(permessage-deflate as websockets offers and accepts it: context takeover
both ways) or `no-takeover` (the server answers server_no_context_takeover
and client_no_context_takeover).

Prints the SIP messages both sides sent, as a JSON list of strings.

    python3 tests/sip_websocket.py PORT MODE COUNT
"""

import asyncio
import json
import sys

import websockets
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory


def request(mode, n):
    body = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n"
    method = "INVITE" if n % 5 == 2 else "OPTIONS"
    text = (f"{method} sip:bob@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/WS live.invalid;branch=z9hG4bK-{mode}-{n}\r\n"
            f"From: <sip:alice@live.invalid>;tag={n}\r\nTo: <sip:bob@127.0.0.1>\r\n"
            f"Call-ID: {mode}-{n}@live\r\nCSeq: {n} {method}\r\nMax-Forwards: 70\r\n")
    if method == "INVITE":
        return text + f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    return text + "\r\n"


def response(req):
    """A 200 for `req`: its Via, From, To, Call-ID and CSeq; no Content-Length."""
    keep = [line for line in req.split("\r\n") if line.split(":")[0] in ("Via", "From", "To", "Call-ID", "CSeq")]
    return "SIP/2.0 200 OK\r\n" + "\r\n".join(keep) + "\r\n\r\n"


async def main(port, mode, count):
    sent = []

    async def serve(ws):
        async for message in ws:
            reply = response(message)
            sent.append(reply)
            await ws.send(reply)

    server = {"subprotocols": ["sip"], "ping_interval": None}
    client = {"subprotocols": ["sip"], "ping_interval": None}
    if mode == "plain":
        server["compression"] = client["compression"] = None
    elif mode == "no-takeover":
        server["compression"] = None
        server["extensions"] = [ServerPerMessageDeflateFactory(server_no_context_takeover=True,
                                                               client_no_context_takeover=True)]
    async with websockets.serve(serve, "127.0.0.1", port, **server):
        async with websockets.connect(f"ws://127.0.0.1:{port}/", **client) as ws:
            for n in range(count):
                message = request(mode, n)
                sent.append(message)
                if n % 3 == 1:
                    await ws.send([message[:40], message[40:120], message[120:]])
                else:
                    await ws.send(message)
                if n % 4 == 0:
                    await (await ws.ping(b"keep-alive"))
                await ws.recv()
    print(json.dumps(sent))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
