"""Watcher for the wrappers that act on a guest at a QMP event (a second QMP monitor stands in for a regression).

    act-on.py SOCKET TRIGGER ACTION

TRIGGER: migration-failed (a failed or cancelled migration: a source that should run on),
unplug-requested (QEMU asked the guest to release its primary), wait-unplug (the migration waits
for that release), negotiated (the guest negotiated failover), primary-ejected or standby-ejected
(the guest ejected that device). ACTION: stop (the guest hangs there, its QEMU runs on), cont
(the VM runs), guest-reset (the guest resets itself, as a triple fault does: a write to the reset
control register, nothing on its console), standby-link-down (the standby's link goes down, as a
cable pulled out of the host), delete-primary (QEMU asks the guest to give the primary up), quit
(QEMU ends, as one that crashes there) or hidden-nic (a NIC with the standby's MAC plugged into
root port rpx without the guest being told: while the VM is stopped, its ACPI hotplug "device up"
bit is read, as the guest's own handler reads and clears it).
"""

import json
import socket
import sys
import time

TRIGGERS = {
    "migration-failed": lambda m: m.get("event") == "MIGRATION" and m["data"]["status"] in ("failed", "cancelled"),
    "unplug-requested": lambda m: m.get("event") == "UNPLUG_PRIMARY",
    "wait-unplug": lambda m: m.get("event") == "MIGRATION" and m["data"]["status"] == "wait-unplug",
    "negotiated": lambda m: m.get("event") == "FAILOVER_NEGOTIATED",
    "primary-ejected": lambda m: m.get("event") == "DEVICE_DELETED" and m["data"].get("device") == "primary0",
    "standby-ejected": lambda m: m.get("event") == "DEVICE_DELETED" and m["data"].get("device") == "standby0",
}
ACTIONS = {
    "stop": {"execute": "stop"},
    "cont": {"execute": "cont"},
    "guest-reset": {"execute": "human-monitor-command", "arguments": {"command-line": "o /b 0xcf9 0x6"}},
    "standby-link-down": {"execute": "set_link", "arguments": {"name": "standby0", "up": False}},
    "delete-primary": {"execute": "device_del", "arguments": {"id": "primary0"}},
    "quit": {"execute": "quit"},
}
path, trigger, action = sys.argv[1], TRIGGERS[sys.argv[2]], ACTIONS.get(sys.argv[3], sys.argv[3])
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


def execute(command, **arguments):
    stream.write(json.dumps({"execute": command, "arguments": arguments}) + "\n")
    stream.flush()
    for line in stream:
        answer = json.loads(line)
        if "event" not in answer:
            return answer.get("return")


def hidden_nic():
    """Plug a NIC with the standby's MAC into rpx; read its slot's "up" bit (ACPI PCI hotplug
    registers at 0xcc0: UP at +0, bus select at +0x10) before the guest can."""
    execute("stop")
    mac = execute("qom-get", path="/machine/peripheral/standby0", property="mac")
    execute("device_add", driver="e1000e", id="hidden0", bus="rpx", mac=mac)
    bsel = execute("qom-get", path="/machine/peripheral/rpx/rpx", property="acpi-pcihp-bsel")
    selected = port_io("i /w 0xcd0").split("=")[-1].strip()  # the guest's choice, put back after
    for line in (f"o /w 0xcd0 {bsel}", "i /w 0xcc0", f"o /w 0xcd0 {selected}"):
        port_io(line)
    execute("cont")


def port_io(line):
    """An I/O port access as the guest's CPU would make it (HMP ``i``/``o``); what it read."""
    return execute("human-monitor-command", **{"command-line": line})


execute("qmp_capabilities")
for line in stream:  # ends when QEMU does
    if trigger(json.loads(line)):
        if action == "hidden-nic":
            hidden_nic()
        else:
            stream.write(json.dumps(action) + "\n")
            stream.flush()
