"""Watcher for the wrappers that act on a guest at a QMP event (a second QMP monitor stands in for a regression).

    act-on.py SOCKET TRIGGER ACTION

TRIGGER: migration-failed (a failed or cancelled migration: a source that should run on),
unplug-requested (QEMU asked the guest to release its primary), wait-unplug (the migration waits for
that release), migration-active (the migration runs: the guest has released its primary), negotiated
(the guest negotiated failover), primary-ejected or standby-ejected (the guest ejected that device,
which a failover unplug does not: QEMU keeps the device to plug it back). ACTION: stop (the guest
hangs there, its QEMU runs on), cont (the VM runs), guest-reset (the guest resets itself, as a
triple fault does: a write to the reset control register, nothing on its console), standby-link-down
(the standby's link goes down, as a cable pulled out of the host), quit (QEMU ends, as one that
crashes there), hidden-nic (a NIC with the standby's MAC plugged into root port rpx without the
guest being told: while the VM is stopped, its ACPI hotplug "device up" bit is read, as the guest's
own handler reads and clears it) or delete-replugged-primary (the primary is taken away as soon as
QEMU plugged it back after a failed migration; see delete_replugged_primary).
"""

import json
import socket
import sys
import time

TRIGGERS = {
    "migration-failed": lambda m: m.get("event") == "MIGRATION" and m["data"]["status"] in ("failed", "cancelled"),
    "unplug-requested": lambda m: m.get("event") == "UNPLUG_PRIMARY",
    "wait-unplug": lambda m: m.get("event") == "MIGRATION" and m["data"]["status"] == "wait-unplug",
    "migration-active": lambda m: m.get("event") == "MIGRATION" and m["data"]["status"] == "active",
    "negotiated": lambda m: m.get("event") == "FAILOVER_NEGOTIATED",
    "primary-ejected": lambda m: m.get("event") == "DEVICE_DELETED" and m["data"].get("device") == "primary0",
    "standby-ejected": lambda m: m.get("event") == "DEVICE_DELETED" and m["data"].get("device") == "standby0",
}
ACTIONS = {
    "stop": {"execute": "stop"},
    "cont": {"execute": "cont"},
    "guest-reset": {"execute": "human-monitor-command", "arguments": {"command-line": "o /b 0xcf9 0x6"}},
    "standby-link-down": {"execute": "set_link", "arguments": {"name": "standby0", "up": False}},
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


held_events = []  # events that came while a command waited for its answer


def execute(command, **arguments):
    stream.write(json.dumps({"execute": command, "arguments": arguments}) + "\n")
    stream.flush()
    for line in stream:
        answer = json.loads(line)
        if "event" in answer:
            held_events.append(answer)
        else:
            return answer.get("return")


def events():
    """QMP events (and the answers to commands written without waiting), the held ones first; ends
    when QEMU does."""
    while True:
        while held_events:
            yield held_events.pop(0)
        line = stream.readline()
        if not line:
            return
        yield json.loads(line)


def hidden_nic():
    """Plug a NIC with the standby's MAC into rpx; read its slot's "up" bit (ACPI PCI hotplug
    registers at 0xcc0: UP at +0, bus select at +0x10) before the guest can."""
    execute("stop")
    mac = execute("qom-get", path="/machine/peripheral/standby0", property="mac")
    execute("device_add", driver="e1000e", id="hidden0", bus="rpx", mac=mac)
    bsel = execute("qom-get", path="/machine/peripheral/rpx/rpx", property="acpi-pcihp-bsel")
    selected = port_in("w", 0xcd0)  # the guest's choice, put back after
    port_io(f"o /w 0xcd0 {bsel}")
    port_in("w", 0xcc0)
    port_io(f"o /w 0xcd0 {selected:#x}")
    execute("cont")


def port_io(line):
    """An I/O port access as the guest's CPU would make it (HMP ``i``/``o``); what HMP printed."""
    return execute("human-monitor-command", **{"command-line": line})


def port_in(size, port):
    """What the guest's CPU would read from I/O *port* (*size*: b, w or l)."""
    return int(port_io(f"i /{size} {port:#x}").split("=")[-1], 16)


# QEMU's ACPI PCI hotplug raises this bit of the GPE0 status register (include/hw/acpi/acpi.h).
PCI_HOTPLUG_GPE_STATUS = 0x2
REPLUG_DEADLINE_S = 5.0


def delete_replugged_primary():
    """Hold the guest stopped from its release of the primary on; once the migration failed and QEMU
    plugged the primary back (its hotplug event pending, unseen by the stopped guest), take the primary
    away (device_del) and let the guest run: it handles both at once, adding the primary and ejecting
    it, and is left without it. Sent at the failure itself, the device_del raced QEMU's re-plug: when
    it came first, the guest ejected an absent device and kept the re-plugged one."""
    execute("stop")
    ended = next((m for m in events() if TRIGGERS["migration-failed"](m)
                  or (m.get("event") == "MIGRATION" and m["data"]["status"] == "completed")), None)
    if ended is not None and TRIGGERS["migration-failed"](ended):
        gpe0 = gpe0_status_port()
        deadline = time.monotonic() + REPLUG_DEADLINE_S
        # No ACPI re-plug seen by the deadline (native hotplug): take the primary away all the same.
        while not port_in("b", gpe0) & PCI_HOTPLUG_GPE_STATUS and time.monotonic() < deadline:
            time.sleep(0.02)
        execute("device_del", id="primary0")
        execute("cont")


def gpe0_status_port():
    """The GPE0 status register's I/O port, as the guest's firmware placed the ICH9 PM block."""
    lpc = next(child["name"] for child in execute("qom-list", path="/machine/unattached")
               if child["type"] == "child<ICH9-LPC>")
    return execute("qom-get", path=f"/machine/unattached/{lpc}", property="gpe0_blk")


execute("qmp_capabilities")
for message in events():  # ends when QEMU does
    if trigger(message):
        if action == "hidden-nic":
            hidden_nic()
        elif action == "delete-replugged-primary":
            delete_replugged_primary()
        else:
            stream.write(json.dumps(action) + "\n")
            stream.flush()
