"""deploy/ansible/fleet.yml run by ansible-core against two hosts over SSH (fleet-a on
127.0.0.2, fleet-b on 127.0.0.3, tests_fleet/hosts.py): each host installs the wheel built on
the controller into its own prefix, probes, runs a part of the library in strict mode with
the expected skips of this machine's class (conftest.HOST_CLASS); the controller fetches and
aggregates.

The first playbook run passes on both hosts. The second gives fleet-b a scenario whose
expectation is wrong and adds a host nothing answers for: fleet-b's run fails, fleet-a's
reports and fleet-b's are still fetched, the aggregate shows the failed cells, and the
playbook fails naming fleet-b and the unreachable host.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests_fleet.conftest import HOST_CLASS, HOST_GROUP, REPO, SELECT, expected_rows, read_json
from tests_fleet.hosts import Fleet, free_port

PLAYBOOK = REPO / "deploy" / "ansible" / "fleet.yml"
HOSTS = ("fleet-a", "fleet-b")
#: a scenario the guest cannot pass: it writes pattern 1 and must read pattern 2 back
WRONG = """\
    name: fleet-wrong-pattern
    description: The guest writes pattern 1; the scenario wrongly expects pattern 2.
    tags: [smoke]
    vm:
      machine: microvm
      memory:
        - {id: ram0, size: 16M, backend: memfd, share: true}
    steps:
      - action: guest.write
        range: {region: ram0, offset: 1M, size: 1M}
        seed: 1
      - action: guest.verify
        range: {region: ram0, offset: 1M, size: 1M}
        expect: {pattern: 2}
    timeouts: {boot: 30s, step: 10s}
"""


@dataclass
class PlaybookRun:
    rc: int
    seconds: float
    results: Path
    #: tests_fleet/ansible_plugins/record.py's document: each task's result per host, stats
    doc: dict[str, Any]
    output: str

    def task(self, name: str) -> dict[str, Any]:
        """Each host's result of the task called ``name`` (or of its role's ``qmpgmem :
        name``): host -> result."""
        found = {t["host"]: t["result"] for t in self.doc["tasks"]
                 if t["task"] in (name, f"qmpgmem : {name}")}  # fmt: skip
        assert found, f"no task {name!r} ran"
        return found

    def why(self) -> str:
        msgs = [
            f"{t['host']}: {t['task']}: {t['result'].get('msg') or t['result'].get('stderr', '')}"
            for t in self.doc["tasks"]
            if t["result"].get("failed") or t["result"].get("unreachable")
        ]
        return "\n".join(msgs) or self.output[-3000:]


def playbook(
    ansible_playbook: Path, fleet: Fleet, controller_qmpgmem: Path, name: str,
    more_hosts: dict[str, dict[str, object]] | None = None, **host_vars: dict[str, object],
) -> PlaybookRun:
    """``ansible-playbook -i INVENTORY fleet.yml`` with the tier's selection, the reports
    under the fleet's directory in ``name``/; ``more_hosts`` joins the fleet's group."""
    work = fleet.root / name
    work.mkdir()
    inventory = work / "inventory.json"
    doc: Any = fleet.inventory(HOST_GROUP, **host_vars)
    doc["all"]["children"][HOST_GROUP]["hosts"].update(more_hosts or {})
    inventory.write_text(json.dumps(doc))
    results = work / "results"
    extra = {"qmpgmem_select": SELECT, "qmpgmem_results": str(results),
             "qmpgmem_controller_bin": str(controller_qmpgmem)}  # fmt: skip
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(PLAYBOOK.parent / "ansible.cfg"),
        ANSIBLE_CALLBACK_PLUGINS=str(Path(__file__).parent / "ansible_plugins"),
        ANSIBLE_CALLBACKS_ENABLED="record",
        QMPGMEM_FLEET_RECORD=str(work / "record.json"),
        # nothing of ansible's outside the fleet's directory
        ANSIBLE_HOME=str(work / "ansible-home"),
        ANSIBLE_LOCAL_TEMP=str(work / "ansible-local"),
        ANSIBLE_REMOTE_TEMP=str(work / "ansible-remote"),  # the controller's delegated tasks
        ANSIBLE_SSH_CONTROL_PATH_DIR=str(fleet.root / "cp"),
        ANSIBLE_NOCOLOR="1",
    )
    start = time.monotonic()
    res = subprocess.run(
        [str(ansible_playbook), "-i", str(inventory), str(PLAYBOOK), "-e", json.dumps(extra)],
        capture_output=True, text=True, env=env, timeout=1200, check=False,
    )  # fmt: skip
    seconds = time.monotonic() - start
    (work / "playbook.log").write_text(res.stdout + res.stderr)
    if not (work / "record.json").exists():
        pytest.fail(f"ansible-playbook exited {res.returncode} before its first play: "
                    f"{res.stdout[-2000:]}{res.stderr[-2000:]}")  # fmt: skip
    doc = read_json(work / "record.json")
    return PlaybookRun(res.returncode, seconds, results, doc, res.stdout + res.stderr)


@pytest.fixture(scope="module")
def passing(ansible_playbook: Path, fleet: Fleet, controller_qmpgmem: Path) -> PlaybookRun:
    return playbook(ansible_playbook, fleet, controller_qmpgmem, "passing")


def test_the_playbook_qualifies_both_hosts(passing: PlaybookRun) -> None:
    assert passing.rc == 0, passing.why()
    stats = passing.doc["stats"]
    assert set(stats) == set(HOSTS)
    assert all(s["failures"] == 0 and s["unreachable"] == 0 for s in stats.values()), stats
    verdict = passing.task("Say that every host passed")
    assert "all 2 host(s) passed" in next(iter(verdict.values()))["msg"]
    print(f"passing playbook run (fresh install on both hosts): {passing.seconds:.1f}s")


def test_each_hosts_reports_are_fetched_and_name_the_host(passing: PlaybookRun) -> None:
    rows = expected_rows()
    for host in HOSTS:
        run = read_json(passing.results / "runs" / f"{host}.json")
        assert run["kind"] == "run" and run["complete"], run.get("interrupted")
        assert run["host"]["hostname"] == host  # uname -n in the host's UTS namespace
        assert run["gate"]["passed"], run["gate"]["verdict"]
        assert run["gate"]["baseline"].endswith(f"/classes/{HOST_CLASS}.yaml")
        assert {(r["scenario"], r["engine"]) for r in run["results"]} == rows
        assert {r["status"] for r in run["results"]} == {"passed", "skipped"}
        probe = read_json(passing.results / "probes" / f"{host}.json")
        assert probe["kind"] == "probe" and probe["host"]["hostname"] == host
        junit = (passing.results / "junit" / f"{host}.xml").read_text()
        assert "qmpgmem.gate" in junit and "basic-smoke" in junit


def test_the_aggregate_has_both_hosts_and_every_scenario(passing: PlaybookRun) -> None:
    agg = read_json(passing.results / "fleet.json")
    assert sorted(h["hostname"] for h in agg["hosts"]) == list(HOSTS)
    assert {h["host_class"] for h in agg["hosts"]} == {HOST_CLASS}
    assert {(r["scenario"], r["engine"]) for r in agg["rows"]} == expected_rows()
    for row in agg["rows"]:
        cells = agg["cells"][row["id"]]
        assert set(cells) == {h["id"] for h in agg["hosts"]}, row["id"]
    page = (passing.results / "fleet.html").read_text()
    assert all(h["id"] in page for h in agg["hosts"])


def test_each_host_installed_into_its_own_prefix(passing: PlaybookRun, fleet: Fleet) -> None:
    for host in HOSTS:
        prefix = fleet.root / "prefix" / host
        assert (prefix / "venv" / "bin" / "qmpgmem").exists()
        assert list((prefix / "cache" / "qmpgmem" / "microguest").iterdir()), "no guest build"
        assert not list((prefix / "tmp").glob("qmpgmem-*")), "run directories left behind"
    installs = passing.task("Install the wheel with its dependencies")
    assert set(installs) == set(HOSTS) and all(r["changed"] for r in installs.values())


def test_the_fleet_page_renders_both_hosts_in_chromium(passing: PlaybookRun) -> None:
    from tests.fleet.test_html_browser import TableText, chromium, headless

    browser = chromium()
    agg = read_json(passing.results / "fleet.json")
    page = (passing.results / "fleet.html").resolve().as_uri()
    dom = headless(browser, passing.results.parent / "chromium-profile", "--dump-dom", page)
    assert dom.returncode == 0 and "<table" in dom.stdout, dom.stderr[-2000:]
    matrix = TableText("matrix")
    matrix.feed(dom.stdout)
    for host in agg["hosts"]:
        assert any(c.split()[0] == host["id"] for c in matrix.head), matrix.head
    assert [r[0] for r in matrix.rows] == [r["scenario"] for r in agg["rows"]]
    assert {c for r in matrix.rows for c in r[2:]} == {"PASS", "SKIP"}


def test_a_failing_host_is_fetched_aggregated_and_named(
    passing: PlaybookRun, ansible_playbook: Path, fleet: Fleet, controller_qmpgmem: Path
) -> None:
    wrong = fleet.root / "wrong"
    wrong.mkdir()
    (wrong / "wrong-pattern.yaml").write_text(textwrap.dedent(WRONG))
    (wheel,) = (passing.results / "dist").glob("qmpgmem-*.whl")
    # fleet-gone: a port of 127.0.0.3 where nothing listens
    gone = {"fleet-gone": {
        "ansible_host": "127.0.0.3", "ansible_port": free_port("127.0.0.3"),
        "qmpgmem_prefix": str(fleet.root / "prefix" / "fleet-gone"), "qmpgmem_wheel": str(wheel),
    }}  # fmt: skip
    failing = playbook(
        ansible_playbook, fleet, controller_qmpgmem, "failing", more_hosts=gone,
        fleet_a={"qmpgmem_wheel": str(wheel)},
        fleet_b={"qmpgmem_wheel": str(wheel), "qmpgmem_scenarios": [str(wrong) + "/"]},
    )  # fmt: skip
    assert failing.rc == 4, failing.why()  # ansible's: a host was unreachable
    (verdict,) = failing.task("Name every host whose run failed").values()
    assert verdict["failed"]
    assert "2 of 3 host(s) failed" in verdict["msg"], verdict["msg"]
    assert "fleet-gone: no run (unreachable" in verdict["msg"]
    assert failing.doc["stats"]["fleet-gone"]["unreachable"] == 1
    assert "fleet-b: run exited 1: strict: failed" in verdict["msg"], verdict["msg"]
    assert "fleet-a" not in verdict["msg"]
    # both hosts that ran fetched their reports, the failing one too
    runs = {h: read_json(failing.results / "runs" / f"{h}.json") for h in HOSTS}
    assert runs["fleet-a"]["gate"]["passed"]
    assert not runs["fleet-b"]["gate"]["passed"]
    assert {r["status"] for r in runs["fleet-b"]["results"]} == {"failed"}
    assert (failing.results / "junit" / "fleet-b.xml").exists()
    # the aggregate shows fleet-b's failed cells beside fleet-a's
    agg = read_json(failing.results / "fleet.json")
    ids = {h["hostname"]: h["id"] for h in agg["hosts"]}
    assert set(ids) == set(HOSTS)
    b_cells = {r["id"]: agg["cells"][r["id"]].get(ids["fleet-b"], {}) for r in agg["rows"]}
    failed = {(r["scenario"], r["engine"]) for r in agg["rows"]
              if b_cells[r["id"]].get("status") == "failed"}  # fmt: skip
    assert failed == {("fleet-wrong-pattern", "qemu"), ("fleet-wrong-pattern", "kvm")}
    assert all(agg["cells"][r["id"]][ids["fleet-a"]]["status"] in ("passed", "skipped")
               for r in agg["rows"] if ids["fleet-a"] in agg["cells"][r["id"]])  # fmt: skip
    assert (failing.results / "fleet.html").exists()
    # the given wheel, already installed: nothing reinstalled on either host
    installs = failing.task("Install the wheel with its dependencies")
    assert all(r.get("skipped") for r in installs.values()), installs
    print(f"failing playbook run (installed hosts): {failing.seconds:.1f}s")
