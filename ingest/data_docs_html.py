"""The Data Docs site as self-contained HTML: an index and one page per suite, nothing to fetch.

Great Expectations' own site cannot be read offline: its index is a table that jQuery and
bootstrap-table fill in the browser, and its pages load Bootstrap, popper, Font Awesome,
a date picker and Vega from five CDNs — with no network the index is empty and the pages
unstyled. These pages hold the same validation results (expectation, column, what it
expects, what was observed, its outcome) as plain HTML with one inline stylesheet and no
script, so they open from the home on a machine with no network and print as they show.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from ingest.expectations import ExpectationOutcome

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:72rem;padding:0 1rem;color:#1d2733}
h1{font-size:1.5rem;margin:0 0 .25rem} h2{font-size:1.15rem;margin:1.75rem 0 .5rem}
p.meta{color:#5b6775;margin:0 0 1.25rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1rem}
th,td{border-bottom:1px solid #dfe3e8;padding:.4rem .6rem;text-align:left;vertical-align:top}
th{background:#f3f5f7;font-weight:600} td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.failed td{background:#fdf1f1} code{font-size:.92em}
.badge{display:inline-block;border-radius:.7rem;padding:.05rem .55rem;font-size:.85em;font-weight:600}
.passed{background:#e3f4e8;color:#17622e} .failed-badge{background:#fbe0e0;color:#9b1c1c} .empty{background:#eef0f3;color:#5b6775}
a{color:#1f5fa8}
"""


@dataclass
class SuitePage:
    """One validated table, as its page shows it."""

    contract: str
    suite: str
    rows_checked: int
    scope: str  # which partitions (or "whole snapshot")
    outcomes: list[ExpectationOutcome]

    @property
    def success(self) -> bool:
        return all(o.success for o in self.outcomes)

    @property
    def failed(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]

    @property
    def file_name(self) -> str:
        return f"{self.suite}.html"


def _badge(page: SuitePage) -> str:
    if not page.rows_checked:
        return '<span class="badge empty">no rows</span>'
    if page.success:
        return '<span class="badge passed">passed</span>'
    return f'<span class="badge failed-badge">{len(page.failed)} failed</span>'


def _document(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")


def render_index(pages: Sequence[SuitePage], source: str, generated: str) -> str:
    rows = "\n".join(
        f'<tr{" class=failed" if p.rows_checked and not p.success else ""}><td><a href="{escape(p.file_name)}">{escape(p.suite)}</a></td>'
        f"<td><code>raw.{escape(p.contract)}</code></td><td>{escape(p.scope)}</td><td class=num>{p.rows_checked:,}</td>"
        f"<td class=num>{len(p.outcomes)}</td><td>{_badge(p)}</td></tr>"
        for p in pages
    )
    failing = sum(1 for p in pages if p.rows_checked and not p.success)
    body = (
        "<h1>Data Docs — raw tables</h1>"
        f'<p class="meta">Great Expectations validation of <code>{escape(source)}</code>, {escape(generated)} · '
        f"{len(pages)} suites, {failing} failing</p>"
        '<table id="suites"><thead><tr><th>suite</th><th>table</th><th>validated</th><th>rows checked</th>'
        f"<th>expectations</th><th>result</th></tr></thead><tbody>\n{rows}\n</tbody></table>"
    )
    return _document("Data Docs — raw tables", body)


def _outcome_row(o: ExpectationOutcome) -> str:
    counted = "—" if o.aggregate else f"{o.unexpected_count:,} of {o.element_count:,} {o.unit}"
    result = '<span class="badge passed">passed</span>' if o.success else '<span class="badge failed-badge">failed</span>'
    return (
        f'<tr{"" if o.success else " class=failed"}><td><code>{escape(o.expectation)}</code></td><td><code>{escape(o.column)}</code></td>'
        f"<td>{escape(o.expected) or '—'}</td><td>{escape(o.observed) or '—'}</td><td class=num>{counted}</td><td>{result}</td></tr>"
    )


def render_suite(page: SuitePage, source: str, generated: str) -> str:
    failed = page.failed
    summary = "".join(f"<li><code>{escape(o.describe())}</code></li>" for o in failed)
    order = failed + [o for o in page.outcomes if o.success]  # what needs looking at first
    body = (
        f'<p><a href="index.html">← all suites</a></p><h1>{escape(page.suite)} {_badge(page)}</h1>'
        f'<p class="meta"><code>raw.{escape(page.contract)}</code> in <code>{escape(source)}</code>: {escape(page.scope)}, '
        f"{page.rows_checked:,} rows · {escape(generated)}</p>"
        + (f"<h2>Failed expectations</h2><ul>{summary}</ul>" if failed else "")
        + '<h2>Expectations</h2><table id="expectations"><thead><tr><th>expectation</th><th>column</th><th>expected</th>'
        "<th>observed (sample)</th><th>unexpected</th><th>result</th></tr></thead><tbody>\n"
        + "\n".join(_outcome_row(o) for o in order)
        + "\n</tbody></table>"
    )
    return _document(page.suite, body)
