"""Watcher for the pause-source-on-failure wrapper: on a failed or cancelled migration, stop the VM."""

import json
import socket
import sys
import time

path = sys.argv[1]
sock = socket.socket(socket.AF_UNIX)
for _ in range(300):  # QEMU creates the socket when it starts
    try:
        sock.connect(path)
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit(1)
stream = sock.makefile("rw")
stream.readline()  # greeting
stream.write('{"execute": "qmp_capabilities"}\n')
stream.flush()
for line in stream:
    message = json.loads(line)
    if message.get("event") == "MIGRATION" and message["data"]["status"] in ("failed", "cancelled"):
        stream.write('{"execute": "stop"}\n')
        stream.flush()
