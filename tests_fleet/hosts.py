"""Test hosts on this machine: one sshd per loopback address, each in a UTS namespace of its
own (``unshare --uts``, ``hostname fleet-a``), so ``uname -n`` and the reports' fingerprints
differ per host, with its own host key and the test's key pair in a private directory.

A host is reached only at its loopback address (127.0.0.2, 127.0.0.3). Stopping it ends
every process that lives in its UTS namespace — the sshd, each session, the QEMUs a run
started — and then checks that none is left.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
#: the loopback addresses the fleet's hosts listen on, and nothing else
ADDRESSES = ("127.0.0.2", "127.0.0.3")
#: sshd's privilege separation directory; Debian's package makes it only when its service starts
PRIVSEP_DIR = Path("/run/sshd")


class HostError(RuntimeError):
    """A test host did not start, or left processes behind when stopped."""


def keygen(path: Path, comment: str) -> str:
    """An ed25519 key pair at ``path``; returns the public key line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True, capture_output=True,
    )  # fmt: skip
    return path.with_suffix(".pub").read_text().strip()


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def uts_members(uts: str) -> list[int]:
    """The processes whose UTS namespace is ``uts`` (as ``readlink /proc/PID/ns/uts`` says)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns" / "uts") == uts:
                pids.append(int(entry.name))
        except OSError:
            continue  # gone meanwhile
    return pids


def processes_naming(text: str) -> list[int]:
    """The processes (not this one) whose command line contains ``text``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if text.encode() in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


@dataclass
class SshHost:
    """One sshd in its own UTS namespace: ``start()``, then ``stop()`` (always)."""

    name: str
    address: str
    root: Path
    authorized_key: str
    port: int = 0
    host_key_line: str = ""
    uts: str = ""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def log(self) -> Path:
        return self.root / "sshd.log"

    def start(self, timeout: float = 20.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        key = self.root / "ssh_host_ed25519_key"
        public = keygen(key, f"host key of {self.name}").split()
        self.host_key_line = " ".join(public[:2])
        (self.root / "authorized_keys").write_text(self.authorized_key + "\n")
        self.port = free_port(self.address)
        config = self.root / "sshd_config"
        config.write_text(
            f"ListenAddress {self.address}:{self.port}\n"
            f"HostKey {key}\n"
            f"PidFile {self.root / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.root / 'authorized_keys'}\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            # the test's temporary directories are not root-only all the way up
            "StrictModes no\nPrintMotd no\nPrintLastLog no\n"
            "Subsystem sftp internal-sftp\n"
        )
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                ["unshare", "--uts", "--", "sh", "-c",
                 'hostname "$1" && exec "$2" -D -e -f "$3"', "sh", self.name, SSHD, str(config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise HostError(f"sshd of {self.name} exited {self.process.returncode}: "
                                f"{self.log.read_text()[-2000:]}")  # fmt: skip
            try:
                with socket.create_connection((self.address, self.port), timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise HostError(f"sshd of {self.name} does not listen on {self.address}:{self.port}")
        self.uts = os.readlink(f"/proc/{self.process.pid}/ns/uts")
        if self.uts == os.readlink("/proc/self/ns/uts"):
            raise HostError(f"sshd of {self.name} runs in this process's UTS namespace")

    def stop(self, timeout: float = 20.0) -> None:
        """End the sshd and everything in its UTS namespace; :raise HostError: leftovers."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if not self.uts:
            return
        deadline = time.monotonic() + timeout
        while (left := uts_members(self.uts)) and time.monotonic() < deadline:
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        if left:
            raise HostError(f"processes of {self.name} outlived it: {left}")

    def known_hosts_line(self) -> str:
        return f"[{self.address}]:{self.port} {self.host_key_line}"


class Fleet:
    """The test hosts and what a controller needs to reach them: a key pair, a known_hosts
    file with each host's key, and a directory per host to install into."""

    def __init__(self, root: Path, names: tuple[str, ...] = ("fleet-a", "fleet-b")) -> None:
        if len(names) > len(ADDRESSES):
            raise ValueError(f"at most {len(ADDRESSES)} hosts, one per loopback address")
        self.root = root
        self.key = root / "id_ed25519"
        self.made_privsep = False
        self.hosts = [
            SshHost(name, address, root / "sshd" / name, authorized_key="")
            for name, address in zip(names, ADDRESSES, strict=False)
        ]

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        public = keygen(self.key, "qmpgmem fleet test")
        if not PRIVSEP_DIR.is_dir():
            PRIVSEP_DIR.mkdir(mode=0o755)
            self.made_privsep = True
        for host in self.hosts:
            host.authorized_key = public
            host.start()
        (self.root / "known_hosts").write_text(
            "".join(h.known_hosts_line() + "\n" for h in self.hosts)
        )

    def stop(self) -> None:
        errors = []
        for host in self.hosts:
            try:
                host.stop()
            except HostError as exc:
                errors.append(str(exc))
        if self.made_privsep:
            shutil.rmtree(PRIVSEP_DIR, ignore_errors=True)
        # the controller's side: ssh connection masters (ControlPersist) and anything else
        # started with a path of the fleet's directory, given a moment to see their hosts gone
        deadline = time.monotonic() + 10
        while (left := processes_naming(str(self.root))) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if left:
            errors.append(f"processes naming {self.root} outlived the fleet: {left}")
        if errors:
            raise HostError("; ".join(errors))

    def ssh(self, host: SshHost, *command: str) -> subprocess.CompletedProcess[str]:
        """Run ``command`` on ``host`` over ssh, the way ansible reaches it."""
        return subprocess.run(
            ["ssh", "-p", str(host.port), "-i", str(self.key), "-o", "BatchMode=yes",
             "-o", f"UserKnownHostsFile={self.root / 'known_hosts'}",
             "-o", "StrictHostKeyChecking=yes", "-o", "ControlMaster=no",
             f"root@{host.address}", *command],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    def inventory(self, group: str, **host_vars: dict[str, object]) -> dict[str, object]:
        """An ansible inventory of the hosts in ``group``, each installing into its own
        prefix under the fleet's directory; ``host_vars`` adds variables per host name."""
        hosts = {}
        for h in self.hosts:
            prefix = self.root / "prefix" / h.name
            hosts[h.name] = {
                "ansible_host": h.address,
                "ansible_port": h.port,
                "qmpgmem_prefix": str(prefix),
                "ansible_remote_tmp": str(prefix / "ansible-tmp"),
                **host_vars.get(h.name.replace("-", "_"), {}),
            }
        return {
            "all": {
                "vars": {
                    "ansible_user": "root",
                    "ansible_ssh_private_key_file": str(self.key),
                    "ansible_ssh_common_args": (
                        f"-o UserKnownHostsFile={self.root / 'known_hosts'} "
                        "-o StrictHostKeyChecking=yes -o BatchMode=yes"
                    ),
                    "ansible_python_interpreter": "/usr/bin/python3",
                },
                "children": {group: {"hosts": hosts}},
            }
        }
