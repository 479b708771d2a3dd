"""Watcher for the wrappers that act on a guest at a QMP event (a second QMP monitor stands in for a regression).

    act-on.py SOCKET TRIGGER ACTION

TRIGGER: migration-failed (a failed or cancelled migration: a source that should run on),
unplug-requested (QEMU asked the guest to release its primary), primary-ejected or
standby-ejected (the guest ejected that device). ACTION: stop (the guest hangs there, its QEMU
runs on), guest-reset (the guest resets itself, as a triple fault does: a write to the reset
control register, nothing on its console), standby-link-down (the standby's link goes down, as a
cable pulled out of the host) or quit (QEMU ends, as one that crashes there).
"""

import json
import socket
import sys
import time

TRIGGERS = {
    "migration-failed": lambda m: m.get("event") == "MIGRATION" and m["data"]["status"] in ("failed", "cancelled"),
    "unplug-requested": lambda m: m.get("event") == "UNPLUG_PRIMARY",
    "primary-ejected": lambda m: m.get("event") == "DEVICE_DELETED" and m["data"].get("device") == "primary0",
    "standby-ejected": lambda m: m.get("event") == "DEVICE_DELETED" and m["data"].get("device") == "standby0",
}
ACTIONS = {
    "stop": {"execute": "stop"},
    "guest-reset": {"execute": "human-monitor-command", "arguments": {"command-line": "o /b 0xcf9 0x6"}},
    "standby-link-down": {"execute": "set_link", "arguments": {"name": "standby0", "up": False}},
    "quit": {"execute": "quit"},
}
path, trigger, action = sys.argv[1], TRIGGERS[sys.argv[2]], ACTIONS[sys.argv[3]]
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
        stream.write(json.dumps(action) + "\n")
        stream.flush()
