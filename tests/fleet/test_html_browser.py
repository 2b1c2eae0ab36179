"""``aggregate --html`` opened in a real headless browser (Debian's chromium): the page
renders offline, every host and scenario is in the matrix as the browser built it, and the
status cells are coloured on screen.

chromium comes from ``tools/install-browser.sh`` (``make test`` runs it). Without it the test
skips and says so, except in CI (``CI`` set), where a missing browser is a failure: the
check must not vanish from CI unnoticed.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fleet.conftest import qmpgmem
from tests.fleet.test_aggregate import fleet

WriteCopy = Callable[..., Path]
#: the cell colours of report/html.py's CSS: passed, failed, miss
PASSED_RGB, FAILED_RGB, MISS_RGB = (0xC9, 0xEF, 0xCF), (0xF7, 0xB4, 0xB4), (0xFB, 0xE3, 0xF1)


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        why = ("needs Debian's chromium for the headless-browser check of aggregate --html "
               "(apt-get install chromium; make test runs tools/install-browser.sh)")  # fmt: skip
        if os.environ.get("CI"):
            pytest.fail(f"CI must install chromium: {why}")
        pytest.skip(why)
    return found


def headless(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--no-first-run", f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


class TableText(HTMLParser):
    """The text of ``<table id=...>``: header cells and each body row's cells."""

    def __init__(self, table_id: str) -> None:
        super().__init__()
        self.table_id, self.depth = table_id, 0
        self.head: list[str] = []
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None
        self._in_head = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and (self.depth or dict(attrs).get("id") == self.table_id):
            self.depth += 1
        elif self.depth == 1 and tag == "thead":
            self._in_head = True
        elif self.depth == 1 and tag == "tr" and not self._in_head:
            self.rows.append([])
        elif self.depth == 1 and tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self.depth:
            self.depth -= 1
        elif self.depth == 1 and tag == "thead":
            self._in_head = False
        elif self.depth == 1 and tag in ("td", "th") and self._cell is not None:
            text = " ".join(" ".join(self._cell).split())
            (self.head if self._in_head else self.rows[-1]).append(text)
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def png_rgb(data: bytes) -> np.ndarray[Any, Any]:
    """The pixels of an 8-bit RGB(A), non-interlaced PNG (what chromium writes) as h x w x 3."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    assert ihdr is not None
    width, height, depth, colour, _, _, interlace = ihdr
    assert depth == 8 and colour in (2, 6) and interlace == 0, ihdr
    bpp = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    out = np.zeros((height, stride), dtype=np.int32)
    prev = np.zeros(stride, dtype=np.int32)
    for y in range(height):
        start = y * (stride + 1)
        kind_ = raw[start]
        cur = np.frombuffer(raw, np.uint8, stride, start + 1).astype(np.int32)
        if kind_ == 2:  # Up
            cur = (cur + prev) & 255
        elif kind_ in (1, 3, 4):  # Sub, Average, Paeth: left to right
            cur = cur.copy()
            for x in range(stride):
                a = int(cur[x - bpp]) if x >= bpp else 0
                b, c = int(prev[x]), int(prev[x - bpp]) if x >= bpp else 0
                if kind_ == 1:
                    p = a
                elif kind_ == 3:
                    p = (a + b) >> 1
                else:
                    pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                    p = a if pa <= pb and pa <= pc else b if pb <= pc else c
                cur[x] = (cur[x] + p) & 255
        out[y], prev = cur, cur
    return out.reshape(height, width, bpp)[:, :, :3].astype(np.uint8)


def test_the_page_renders_every_host_and_scenario_in_chromium(
    run_report: dict[str, Any], write_copy: WriteCopy, tmp_path: Path
) -> None:
    browser = chromium()
    page = tmp_path / "fleet.html"
    res = qmpgmem("aggregate", *map(str, fleet(run_report, write_copy)), "--html", str(page),
                  "--class", "snp=epyc-snp-*", "--json", str(tmp_path / "fleet.json"))  # fmt: skip
    assert res.returncode == 1 and page.exists(), res.stderr
    import json

    agg = json.loads((tmp_path / "fleet.json").read_text())
    url = page.resolve().as_uri()

    dom = headless(browser, tmp_path / "profile", "--dump-dom", url)
    assert dom.returncode == 0 and "<table" in dom.stdout, dom.stderr[-2000:]
    matrix = TableText("matrix")
    matrix.feed(dom.stdout)
    header = " ".join(matrix.head)
    for host in agg["hosts"]:
        assert any(c.split()[0] == host["id"] for c in matrix.head), matrix.head
        assert host["host_class"] in header
    assert [r[0] for r in matrix.rows] == [r["scenario"] for r in agg["rows"]]
    assert all(len(r) == 2 + len(agg["hosts"]) for r in matrix.rows)
    cells = {c for r in matrix.rows for c in r[2:]}
    assert {"PASS", "FAIL", "MISS"} <= cells
    hosts = TableText("hosts")
    hosts.feed(dom.stdout)
    fingerprints = [r[0] for r in hosts.rows if r and r[0].startswith("fingerprint of ")]
    assert len(fingerprints) == len(agg["hosts"])

    shot = tmp_path / "fleet.png"
    res = headless(browser, tmp_path / "profile", f"--screenshot={shot}",
                   "--window-size=1200,800", url)  # fmt: skip
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    pixels = png_rgb(shot.read_bytes())
    assert pixels.shape == (800, 1200, 3)
    colours = {tuple(int(v) for v in px) for px in pixels.reshape(-1, 3)}
    for name, rgb in [("passed", PASSED_RGB), ("failed", FAILED_RGB), ("miss", MISS_RGB)]:
        assert rgb in colours, f"no {name} cell colour {rgb} on the screenshot"
