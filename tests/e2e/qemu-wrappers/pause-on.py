"""Watcher for the wrappers that stop a guest on a QMP event (a second QMP monitor stands in for a regression).

    pause-on.py SOCKET migration-failed   a failed or cancelled migration (a source that should run on)
    pause-on.py SOCKET primary-ejected    the guest ejected its primary (a guest that hangs there)
"""

import json
import socket
import sys
import time

TRIGGERS = {
    "migration-failed": lambda m: m.get("event") == "MIGRATION" and m["data"]["status"] in ("failed", "cancelled"),
    "primary-ejected": lambda m: m.get("event") == "DEVICE_DELETED" and m["data"].get("device") == "primary0",
}
path, trigger = sys.argv[1], TRIGGERS[sys.argv[2]]
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
for line in stream:  # ends when QEMU does
    if trigger(json.loads(line)):
        stream.write('{"execute": "stop"}\n')
        stream.flush()
