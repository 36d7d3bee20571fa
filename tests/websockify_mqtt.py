#!/usr/bin/env python3
"""Debian's websockify, the WebSocket-to-TCP proxy the tests put in front of
mosquitto (whose own websockets listener does not start on Debian 12),
accepting the subprotocol `mqtt` that MQTT clients ask for (MQTT 5.0 §6), as
a broker's own listener, or a reverse proxy passing it through, does.
websockify by itself knows only `binary` and answers 400 to any other
requested subprotocol.

    python3 tests/websockify_mqtt.py [websockify's arguments]
"""

import sys

from websockify import websocketproxy, websockifyserver


def select_subprotocol(self, protocols):
    return "mqtt" if "mqtt" in protocols else ""


websockifyserver.CompatibleWebSocket.select_subprotocol = select_subprotocol
sys.argv[0] = "websockify"
websocketproxy.websockify_init()
