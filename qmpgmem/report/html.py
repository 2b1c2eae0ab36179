"""The aggregate as one static HTML page: the scenario x host matrix, a legend, each host's
fingerprint.

Why one self-contained file: it is archived as a CI artifact and opened from a laptop, a
mail attachment or a file share, offline. So the page has inline CSS, no script, no font or
image from anywhere, and every text from the reports is escaped (hostnames and skip reasons
come from other machines).
"""

from __future__ import annotations

from html import escape
from typing import Final

from qmpgmem.report.aggregate import Aggregate

__all__ = ["LEGEND", "render_html"]

#: status -> (cell text, what it means), in the order of the legend
LEGEND: Final = {
    "passed": ("PASS", "every expectation held"),
    "failed": ("FAIL", "an expectation did not hold"),
    "error": ("ERROR", "the harness or the VM broke"),
    "timeout": ("TIMEOUT", "a step or the scenario ran out of time"),
    "flaky": ("FLAKY", "run --repeat: its runs ended differently (the tooltip says how)"),
    "skipped": ("SKIP", "this host cannot run it (the reason is the cell's tooltip)"),
    "deviation": ("DEV", "kernel-contract: this KVM backend is known to differ"),
    "would-run": ("PLAN", "--plan: would run"),
    "would-skip": ("PLAN-SKIP", "--plan: would skip"),
    "miss": ("MISS", "not run: the host's run was interrupted before it"),
    "absent": ("—", "not in this host's reports"),
}

_CSS: Final = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1b1b1b; }
h1 { font-size: 1.4em; margin: 0 0 .3em; } h2 { font-size: 1.1em; margin: 1.5em 0 .4em; }
table { border-collapse: collapse; }
th, td { border: 1px solid #c8c8c8; padding: 3px 7px; text-align: left; vertical-align: top; }
thead th { background: #eef0f3; position: sticky; top: 0; }
th.host { font-weight: 600; } th.host .cls { display: block; font-weight: normal; color: #555; }
td.cell { text-align: center; font-weight: 600; white-space: nowrap; }
.st-passed { background: #c9efcf; color: #0c5a1c; }
.st-failed { background: #f7b4b4; color: #7d0000; }
.st-error { background: #f3c089; color: #6b3000; }
.st-timeout { background: #f5d98b; color: #5b4300; }
.st-flaky { background: #f7c6e0; color: #6d0a45; }
.st-skipped { background: #dfe3e8; color: #3d4650; }
.st-deviation { background: #d8d0f2; color: #3a2a78; }
.st-would-run, .st-would-skip { background: #e2eefb; color: #1d4f82; }
.st-miss { background: #fbe3f1; color: #7a1651; }
.st-absent { background: #fff; color: #999; }
ul.legend { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: .4em 1.2em; }
ul.legend span.cell { display: inline-block; min-width: 4.5em; text-align: center;
  font-weight: 600; border: 1px solid #c8c8c8; margin-right: .4em; }
tr.details td { background: #fafafa; } details summary { cursor: pointer; }
table.fp td, table.fp th { border: none; padding: 1px 8px 1px 0; font-size: 12px; }
code { font-size: 12px; }
"""


def _matrix(agg: Aggregate) -> str:
    head = ['<tr><th rowspan="2">scenario</th><th rowspan="2">engine</th>']
    for cls in agg.classes():
        n = sum(1 for h in agg.hosts if h.host_class == cls)
        head.append(f'<th colspan="{n}" class="class">{escape(cls)}</th>')
    head.append("</tr><tr>")
    for h in agg.hosts:
        head.append(
            f'<th class="host" data-host="{escape(h.id)}">{escape(h.id)}'
            f'<span class="cls">{escape(h.fingerprint.kernel_release)}</span></th>'
        )
    head.append("</tr>")
    body = []
    for row in agg.rows:
        engine = row.engine + (f", {row.binary}" if row.binary else "")
        tds = [f'<th scope="row">{escape(row.scenario)}</th><td>{escape(engine)}</td>']
        for h in agg.hosts:
            status, cell = agg.state(row, h)
            text = LEGEND.get(status, (status.upper(), ""))[0]
            tip = ""
            if cell is not None:
                parts = [cell.reason] if cell.reason else []
                if cell.duration_s is not None:
                    parts.append(f"{cell.duration_s:.3f}s")
                if cell.binary_version:
                    parts.append(f"QEMU {cell.binary_version}")
                if cell.runs > 1:
                    parts.append(f"worst of {cell.runs} runs")
                tip = " — ".join(parts)
            tds.append(
                f'<td class="cell st-{escape(status)}" title="{escape(tip)}">{escape(text)}</td>'
            )
        body.append(f'<tr data-row="{escape(row.id)}">' + "".join(tds) + "</tr>")
    return (
        '<table id="matrix"><thead>' + "".join(head) + "</thead><tbody>"
        + "\n".join(body) + "</tbody></table>"
    )


def _hosts(agg: Aggregate) -> str:
    cols = ("host", "class", "kernel", "KVM backend", "CPU", "QEMU", "results", "reports")
    rows = ["<tr>" + "".join(f"<th>{c}</th>" for c in cols) + "</tr>"]
    for h in agg.hosts:
        fp = h.fingerprint
        qemu = ", ".join(f"{q.version or '?'} ({q.package_version or q.path})" for q in fp.qemu)
        counts = h.summary.counts()
        if not h.complete:
            counts += f"; interrupted ({', '.join(h.interrupted)})"
        cells = (
            h.id, f"{h.host_class} ({h.class_source})", fp.kernel_release, fp.kvm_backend,
            f"{fp.cpu_model} — {fp.cpu}", qemu or "-", counts, ", ".join(h.files),
        )
        rows.append(
            f'<tr class="host" data-host="{escape(h.id)}">'
            + "".join(f"<td>{escape(c)}</td>" for c in cells)
            + "</tr>"
        )
        props = "".join(
            f"<tr><th>{escape(k)}</th><td><code>{escape(v)}</code></td></tr>"
            for k, v in fp.properties().items()
        )
        rows.append(
            f'<tr class="details"><td colspan="{len(cols)}"><details><summary>fingerprint of '
            f'{escape(h.id)} (hash {escape(h.hash)})</summary><table class="fp">{props}</table>'
            "</details></td></tr>"
        )
    return '<table id="hosts">' + "\n".join(rows) + "</table>"


def _legend() -> str:
    items = "".join(
        f'<li><span class="cell st-{s}">{escape(text)}</span>{escape(meaning)}</li>'
        for s, (text, meaning) in LEGEND.items()
    )
    return f'<ul class="legend" id="legend">{items}</ul>'


def render_html(agg: Aggregate, title: str = "qmpgmem: scenarios \u00d7 hosts") -> str:
    """The page, as text (UTF-8, no external resources)."""
    bad = agg.bad_cells()
    summary = (
        f"{len(agg.hosts)} host(s) in {len(agg.classes())} class(es), {len(agg.rows)} row(s); "
        f"{bad} cell(s) failed, errored or timed out. Aggregated {agg.created}."
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        f"<h1>{escape(title)}</h1>\n<p id=\"summary\">{escape(summary)}</p>\n"
        f"{_legend()}\n{_matrix(agg)}\n<h2>Hosts</h2>\n{_hosts(agg)}\n"
        "</body></html>\n"
    )
