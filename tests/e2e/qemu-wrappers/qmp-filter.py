"""QMP filter for the wrappers whose QEMU takes a migration capability and never uses it.

    qmp-filter.py LISTEN HARNESS CAPABILITY

QEMU connects to LISTEN (its QMP chardev connects out); the filter connects to HARNESS (the
harness's listener) and passes everything both ways, except that it drops CAPABILITY from every
``migrate-set-capabilities``; for ``postcopy-ram`` it also answers ``migrate-start-postcopy``
itself, as a QEMU that took it, and never passes it on.
"""

import json
import os
import socket
import sys
import threading

listen_path, harness_path, capability = sys.argv[1:4]
server = socket.socket(socket.AF_UNIX)
server.bind(listen_path)
server.listen(1)
qemu, _ = server.accept()
server.close()
os.unlink(listen_path)
harness = socket.socket(socket.AF_UNIX)
harness.connect(harness_path)
to_harness = threading.Lock()  # QEMU's messages and the filter's answers, one whole message at a time


def send_to_harness(line: bytes) -> None:
    with to_harness:
        harness.sendall(line)


def from_qemu() -> None:
    for line in qemu.makefile("rb"):  # QEMU ends every message with a newline
        send_to_harness(line)
    harness.shutdown(socket.SHUT_WR)


threading.Thread(target=from_qemu, daemon=True).start()
decoder, pending = json.JSONDecoder(), ""
while data := harness.recv(65536):  # the harness's client sends JSON objects, not always lines
    pending += data.decode()
    while pending.strip():
        try:
            message, end = decoder.raw_decode(pending.lstrip())
        except json.JSONDecodeError:
            break  # the rest of the object is still on its way
        pending = pending.lstrip()[end:]
        command = message.get("execute")
        if command == "migrate-set-capabilities":
            message["arguments"]["capabilities"] = [c for c in message["arguments"]["capabilities"]
                                                    if c["capability"] != capability]
        elif command == "migrate-start-postcopy" and capability == "postcopy-ram":
            send_to_harness(json.dumps({"return": {}, **({"id": message["id"]} if "id" in message else {})})
                            .encode() + b"\n")
            continue
        qemu.sendall(json.dumps(message).encode() + b"\n")
qemu.shutdown(socket.SHUT_WR)
