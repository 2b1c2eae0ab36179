"""``qmpgmem aggregate``: real run and kernel-contract reports of this host, copied as the
reports of other hosts (hostname and a failure edited in), into the matrix, its JSON, the
static HTML page and KCIDB data."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fleet.conftest import qmpgmem, result

WriteCopy = Callable[..., Path]
HOST_ID = re.compile(r"^(?P<name>.+)-(?P<hash>[0-9a-f]{8})$")


def fleet(run_report: dict[str, Any], write_copy: WriteCopy) -> list[Path]:
    """Four hosts: two SNP hosts (one breaks basic-smoke), a TDX host whose run was
    interrupted after its first result, and a host gated with classes/legacy.yaml."""

    def host(name: str, extra: Callable[[dict[str, Any]], None] | None = None) -> Any:
        def edit(doc: dict[str, Any]) -> None:
            doc["host"]["hostname"] = name
            if extra:
                extra(doc)

        return edit

    def broken(doc: dict[str, Any]) -> None:
        r = result(doc, "basic-smoke")
        r["status"], r["reason"] = "failed", "step 2 (guest.verify): hash <mismatch> & more"

    def interrupted(doc: dict[str, Any]) -> None:
        doc["results"], doc["complete"], doc["interrupted"] = doc["results"][:1], False, "SIGTERM"

    def gated(doc: dict[str, Any]) -> None:
        doc["gate"] = {"passed": True, "verdict": "passed", "baseline": "classes/legacy.yaml"}

    return [
        write_copy(run_report, "snp-01.json", host("epyc-snp-01")),
        write_copy(run_report, "snp-02.json", host("epyc-snp-02", broken)),
        write_copy(run_report, "tdx-01.json", host("xeon-tdx-01", interrupted)),
        write_copy(run_report, "old-01.json", host("old-01", gated)),
    ]


def aggregated(*args: str) -> tuple[int, dict[str, Any]]:
    res = qmpgmem("aggregate", *args, "--json", "-")
    assert res.returncode in (0, 1), res.stderr
    return res.returncode, json.loads(res.stdout)


def test_the_matrix_has_every_host_with_its_class_and_fingerprint(
    run_report: dict[str, Any], write_copy: WriteCopy
) -> None:
    paths = fleet(run_report, write_copy)
    code, agg = aggregated(*map(str, paths), "--class", "snp=epyc-snp-*", "--class", "tdx=*tdx*")
    assert code == 1  # epyc-snp-02 failed basic-smoke
    hosts = {HOST_ID.match(h["id"])["name"]: h for h in agg["hosts"]}  # type: ignore[index]
    assert set(hosts) == {"epyc-snp-01", "epyc-snp-02", "xeon-tdx-01", "old-01"}
    assert {n: h["host_class"] for n, h in hosts.items()} == {
        "epyc-snp-01": "snp", "epyc-snp-02": "snp", "xeon-tdx-01": "tdx", "old-01": "legacy",
    }  # fmt: skip
    assert hosts["old-01"]["class_source"] == "baseline classes/legacy.yaml"
    assert hosts["epyc-snp-01"]["fingerprint"]["kernel_release"] == run_report["host"][
        "kernel_release"
    ]
    assert len({h["hash"] for h in hosts.values()}) == 4  # the hostname is part of the hash

    expected_rows = {(r["scenario"], r["engine"]) for r in run_report["results"]}
    assert {(r["scenario"], r["engine"]) for r in agg["rows"]} == expected_rows
    smoke = next(r["id"] for r in agg["rows"] if r["scenario"] == "basic-smoke"
                 and r["engine"] == "qemu")  # fmt: skip
    cells = agg["cells"][smoke]
    snp2 = hosts["epyc-snp-02"]["id"]
    assert cells[snp2]["status"] == "failed" and "mismatch" in cells[snp2]["reason"]
    assert cells[hosts["epyc-snp-01"]["id"]]["status"] == "passed"
    tdx = hosts["xeon-tdx-01"]
    assert not tdx["complete"] and tdx["interrupted"] == ["SIGTERM"]
    assert sum(tdx["id"] in by_host for by_host in agg["cells"].values()) == 1


def test_a_host_is_one_column_however_many_reports_it_wrote(
    run_report: dict[str, Any], contract_report: dict[str, Any], write_copy: WriteCopy
) -> None:
    run = write_copy(run_report, "run.json")
    contract = write_copy(contract_report, "contract.json")
    same = run_report["host"]["hostname"]

    def same_host(doc: dict[str, Any]) -> None:  # the contract run as the run's host saw it
        doc["host"] = json.loads(json.dumps(run_report["host"]))

    code, agg = aggregated(str(run), str(write_copy(contract_report, "c2.json", same_host)))
    assert [h["hostname"] for h in agg["hosts"]] == [same]
    assert len(agg["hosts"][0]["files"]) == 2
    checks = [r for r in agg["rows"] if r["engine"] == "kernel-contract"]
    assert {r["scenario"] for r in checks} == {c["name"] for c in contract_report["checks"]}
    assert code == (1 if contract_report["counts"]["failed"] else 0)
    # as written here: the same column when the fingerprints agree but for the engine
    code, agg = aggregated(str(run), str(contract))
    same_image = {**contract_report["host"], "engine": ""} == {**run_report["host"], "engine": ""}
    assert len(agg["hosts"]) == (1 if same_image else 2)
    # and a re-imaged host (another kernel, same hostname) is another column
    code, agg = aggregated(
        str(run),
        str(write_copy(run_report, "new-kernel.json",
                       lambda d: d["host"].update(kernel_release="7.0.0"))),
    )  # fmt: skip
    assert [h["hostname"] for h in agg["hosts"]] == [same, same]


def test_a_directory_stands_for_its_reports(
    run_report: dict[str, Any], write_copy: WriteCopy, tmp_path: Path
) -> None:
    fleet(run_report, write_copy)
    code, agg = aggregated(str(tmp_path))
    assert code == 1 and len(agg["hosts"]) == 4
    assert all(h["class_source"] in ("derived", "baseline classes/legacy.yaml")
               for h in agg["hosts"])  # fmt: skip
    empty = tmp_path / "empty"
    empty.mkdir()
    res = qmpgmem("aggregate", str(empty))
    assert res.returncode == 2 and f"{empty} has no *.json report" in res.stderr


def test_probe_reports_and_bad_options_are_refused(
    probe_report: dict[str, Any], run_report: dict[str, Any], write_copy: WriteCopy
) -> None:
    probe = write_copy(probe_report, "probe.json")
    res = qmpgmem("aggregate", str(write_copy(run_report, "run.json")), str(probe))
    assert res.returncode == 2
    assert res.stderr.strip() == (
        f"error: {probe}: $.kind: is a probe report; aggregate takes run and kernel-contract "
        "reports"
    )
    res = qmpgmem("aggregate", str(probe), "--class", "snp")
    assert res.returncode == 2 and "is not NAME=GLOB" in res.stderr
    res = qmpgmem("aggregate", str(write_copy(run_report, "r.json")), "--kcidb", "-",
                  "--origin", "My-Lab")  # fmt: skip
    assert res.returncode == 2 and "KCIDB origin 'My-Lab'" in res.stderr


def test_the_html_page_is_one_offline_file(
    run_report: dict[str, Any], write_copy: WriteCopy, tmp_path: Path
) -> None:
    page = tmp_path / "fleet.html"
    res = qmpgmem("aggregate", *map(str, fleet(run_report, write_copy)), "--html", str(page))
    assert res.returncode == 1, res.stderr
    html = page.read_text()
    assert "<script" not in html and "<link" not in html and "@import" not in html
    assert not re.search(r"""(src|href)\s*=|url\(""", html), "the page loads something"
    assert "<style>" in html and 'id="legend"' in html
    for status in ("st-passed", "st-failed", "st-miss"):
        assert f'class="cell {status}"' in html
    # text from other machines is escaped
    assert "hash &lt;mismatch&gt; &amp; more" in html and "<mismatch>" not in html
    assert html.count('<tr class="details">') == 4 and html.count("<details>") == 4


def _kcidb(run_report: dict[str, Any], contract_report: dict[str, Any],
           write_copy: WriteCopy) -> dict[str, Any]:  # fmt: skip
    def timeout(doc: dict[str, Any]) -> None:
        doc["host"]["hostname"] = "xeon-tdx-02"
        result(doc, "basic-smoke")["status"] = "timeout"
        result(doc, "basic-file-backend")["status"] = "skipped"

    paths = [*fleet(run_report, write_copy), write_copy(run_report, "t.json", timeout),
             write_copy(contract_report, "contract.json")]  # fmt: skip
    res = qmpgmem("aggregate", *map(str, paths), "--kcidb", "-", "--origin", "my_lab")
    assert res.returncode == 1, res.stderr
    data: dict[str, Any] = json.loads(res.stdout)
    return data


def test_kcidb_output_validates_and_maps_statuses(
    run_report: dict[str, Any], contract_report: dict[str, Any], write_copy: WriteCopy
) -> None:
    kcidb_io = pytest.importorskip("kcidb_io", reason="kcidb-io (a dev dependency) is missing")
    data = _kcidb(run_report, contract_report, write_copy)
    kcidb_io.schema.V5_0.validate_exactly(data)
    kcidb_io.schema.LATEST.validate(data)  # and what the newest schema reads

    tests = data["tests"]
    assert all(t["origin"] == "my_lab" and t["id"].startswith("my_lab:") for t in tests)
    assert len({t["id"] for t in tests}) == len(tests)
    by = {(t["environment"]["misc"]["host_id"].rsplit("-", 1)[0], t["path"]): t for t in tests}
    qemu_smoke = "qmpgmem.qemu.basic-smoke"
    assert by[("epyc-snp-01", qemu_smoke)]["status"] == "PASS"
    assert by[("epyc-snp-02", qemu_smoke)]["status"] == "FAIL"
    assert "mismatch" in by[("epyc-snp-02", qemu_smoke)]["log_excerpt"]
    assert by[("xeon-tdx-02", qemu_smoke)]["status"] == "ERROR"
    assert by[("xeon-tdx-02", "qmpgmem.qemu.basic-file-backend")]["status"] == "SKIP"
    tdx = [t for (h, _), t in by.items() if h == "xeon-tdx-01"]
    assert sorted(t["status"] for t in tdx) == ["MISS"] * (len(run_report["results"]) - 1) + [
        "PASS"
    ]
    contract = {t["misc"]["qmpgmem_status"]: t["status"] for t in tests
                if t["path"].startswith("qmpgmem.kernel-contract.")}  # fmt: skip
    expected = {"passed": "PASS", "deviation": "DONE", "skipped": "SKIP", "failed": "FAIL"}
    assert contract == {k: v for k, v in expected.items() if contract_report["counts"][k]}
    # hosts of one image share a build; each build names its checkout, each test its build
    builds = {b["id"]: b for b in data["builds"]}
    assert {t["build_id"] for t in tests} <= set(builds)
    assert {b["checkout_id"] for b in builds.values()} <= {c["id"] for c in data["checkouts"]}
    assert data["checkouts"][0]["misc"]["kernel_release"] == run_report["host"]["kernel_release"]


def test_kcidb_output_fails_the_schema_when_it_should(
    run_report: dict[str, Any], contract_report: dict[str, Any], write_copy: WriteCopy
) -> None:
    kcidb_io = pytest.importorskip("kcidb_io", reason="kcidb-io (a dev dependency) is missing")
    data = _kcidb(run_report, contract_report, write_copy)
    data["tests"][0]["status"] = "passed"
    assert not kcidb_io.schema.V5_0.is_valid_exactly(data)


def test_help_teaches_with_an_example() -> None:
    res = qmpgmem("aggregate", "--help")
    assert res.returncode == 0 and "--class snp='epyc-snp-*'" in res.stdout


def test_a_flaky_cell_counts_as_bad_in_every_output(
    run_report: dict[str, Any], write_copy: WriteCopy, tmp_path: Path
) -> None:
    def flaky(doc: dict[str, Any]) -> None:
        doc["host"]["hostname"] = "flaky-01"
        r = result(doc, "basic-smoke")
        r["status"], r["reason"] = "flaky", "passed 2, failed 1 of 3 runs; run 3 failed: x"
        times = {"duration_min_s": 0.1, "duration_median_s": 0.2, "duration_max_s": 0.3}
        r["repeats"] = {"runs": 3, "statuses": ["passed", "passed", "failed"], **times}

    good = write_copy(run_report, "good.json")
    bad = write_copy(run_report, "flaky.json", flaky)
    code, _ = aggregated(str(good))
    assert code == 0
    page, kcidb = tmp_path / "f.html", tmp_path / "k.json"
    res = qmpgmem("aggregate", str(good), str(bad), "--html", str(page), "--kcidb", str(kcidb))
    assert res.returncode == 1, res.stdout + res.stderr
    code, agg = aggregated(str(good), str(bad))
    row = next(r["id"] for r in agg["rows"] if r["id"].startswith("basic-smoke [qemu"))
    cells = {agg_host["hostname"]: agg["cells"][row][agg_host["id"]] for agg_host in agg["hosts"]}
    assert cells["flaky-01"]["status"] == "flaky" and cells["flaky-01"]["runs"] == 3
    assert ">FLAKY<" in page.read_text()
    tests = json.loads(kcidb.read_text())["tests"]
    flaky_tests = [t for t in tests if t["misc"]["qmpgmem_status"] == "flaky"]
    assert [t["status"] for t in flaky_tests] == ["FAIL"]
