#!/usr/bin/env python3
"""qemu's guestfwd command: joins the guest's TCP connection (on stdin and
stdout) to one host service, 127.0.0.1:PORT. The only way out of the
management NIC of the test's guests (user networking with restrict=on)."""

import os
import select
import socket
import sys

service = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
while True:
    ready, _, _ = select.select([stdin, service], [], [])
    if stdin in ready:
        data = os.read(stdin, 65536)
        if not data:
            break
        service.sendall(data)
    if service in ready:
        data = service.recv(65536)
        if not data:
            break
        os.write(stdout, data)
