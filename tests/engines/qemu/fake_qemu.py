#!/usr/bin/env python3
"""A stand-in for qemu-system-x86_64 that misbehaves on its QMP socket, on purpose.

Fault injection a real QEMU cannot give on demand; the mode comes from FAKE_QMP_MODE:
  silent      accept the fds, never say anything (a hung monitor)
  garbage     greet, then answer qmp_capabilities with a line that is not JSON
  bad-reply   greet, negotiate, then answer every command with a reply of the wrong shape
"""

import os
import socket
import sys
import time


def qmp_fd() -> int:
    for i, arg in enumerate(sys.argv):
        if arg == "-chardev" and "id=qmpgmem-qmp" in sys.argv[i + 1]:
            opts = dict(kv.split("=", 1) for kv in sys.argv[i + 1].split(",")[1:])
            return int(opts["fd"])
    raise SystemExit("fake qemu: no QMP chardev")


def main() -> None:
    mode = os.environ.get("FAKE_QMP_MODE", "silent")
    sock = socket.socket(fileno=qmp_fd())
    if mode == "silent":
        time.sleep(3600)
    greeting = b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 0, "major": 10}, '
    greeting += b'"package": "fake"}, "capabilities": []}}\n'
    sock.sendall(greeting)
    sock.recv(4096)  # qmp_capabilities (QMP needs no newline: one command per read here)
    if mode == "garbage":
        sock.sendall(b"this is not json\n")
    else:
        sock.sendall(b'{"return": {}}\n')
        while sock.recv(4096):
            sock.sendall(b'{"return": {}, "id": "not-the-id-you-sent"}\n')
    time.sleep(3600)


if __name__ == "__main__":
    main()
