"""The test hosts themselves (tests_fleet/hosts.py): each answers over SSH at its own
loopback address with its own hostname, and stopping one ends what ran in it — which
terminating its sshd alone does not."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests_fleet.hosts import Fleet, uts_members


def running(pid: int) -> bool:
    """``pid`` exists and is no zombie (a killed orphan waits for this machine's init)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_each_host_has_its_address_hostname_and_key(fleet: Fleet) -> None:
    seen = {}
    for host in fleet.hosts:
        res = fleet.ssh(host, "uname -n; echo $SSH_CONNECTION")
        assert res.returncode == 0, res.stderr
        name, connection = res.stdout.split("\n", 1)
        seen[host.address] = name
        assert connection.split()[2:] == [host.address, str(host.port)]
    assert seen == {"127.0.0.2": "fleet-a", "127.0.0.3": "fleet-b"}
    assert os.uname().nodename not in seen.values()


def test_a_wrong_host_key_is_refused(fleet: Fleet) -> None:
    a, b = fleet.hosts
    known = fleet.root / "known_hosts"
    good = known.read_text()
    try:  # fleet-a's entry with fleet-b's key
        known.write_text(f"[{a.address}]:{a.port} {b.host_key_line}\n")
        res = fleet.ssh(a, "true")
        assert res.returncode == 255 and "HOST IDENTIFICATION HAS CHANGED" in res.stderr
    finally:
        known.write_text(good)


def test_stopping_a_host_ends_what_runs_in_it(tmp_path: Path, sshd: Path) -> None:
    fleet = Fleet(tmp_path / "one", names=("fleet-x",))
    fleet.start()
    try:
        (host,) = fleet.hosts
        res = fleet.ssh(host, "setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $!")
        assert res.returncode == 0, res.stderr
        sleeper = int(res.stdout.split()[-1])
        assert sleeper in uts_members(host.uts)
        assert host.process is not None
        host.process.terminate()  # the sshd alone: the detached sleep outlives it
        host.process.wait(timeout=10)
        time.sleep(0.5)
        assert running(sleeper), "the sleep ended with sshd"
    finally:
        fleet.stop()  # the sweep of the UTS namespace
    assert not uts_members(host.uts)
    assert not running(sleeper)
