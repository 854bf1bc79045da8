"""The report as one self-contained web page: ``duixwatch report --html FILE``.

The numbers are :mod:`duixwatch.export.report`'s; this draws them: per APP the summary, the
backtest and the duration histogram as an inline SVG bar chart with the thresholds as dashed
lines. Inline CSS, no script, nothing loaded from elsewhere, every name HTML-escaped.
"""

from __future__ import annotations

import html
from bisect import bisect_left
from typing import Final

from duixwatch.export.report import (
    PERCENTILE_METHOD,
    AppReport,
    Report,
    bucket_labels,
    format_duration,
    human,
    percent,
    window,
)
from duixwatch.watch.lifecycle import DURATION_BUCKETS

__all__ = ["render_html"]

# ----------------------------------------------------------------------- HTML

_CSS: Final = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:60em;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
small,.meta{color:#666}table{border-collapse:collapse;margin:.8em 0}
td,th{padding:.2em .8em;text-align:left;border-bottom:1px solid #eee}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}svg{max-width:100%;height:auto}
"""
_PALETTE: Final = ("#c0392b", "#d35400", "#8e44ad", "#16a085", "#2c3e50", "#b8860b")
#: Text drawn over lines and bars stays legible on a white halo.
_HALO: Final = 'stroke="#fff" stroke-width="3" paint-order="stroke"'


def _svg(a: AppReport) -> str:
    """The histogram as an inline SVG bar chart (its styles inline too, so the chart stands on
    its own): bars between the bucket bounds, the thresholds drawn as dashed lines where they
    cut the duration axis."""
    esc = html.escape
    labels = bucket_labels()
    slots = len(labels)
    slot, left, plot_h = 56, 30, 200
    top = 24 + 15 * len(a.backtest)
    width, height = left + slot * slots + 30, top + plot_h + 44
    most = max(a.buckets) or 1
    base = top + plot_h
    font = 'font-family="system-ui,sans-serif" font-size="11"'
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}"'
        f' width="{width}" height="{height}" role="img" {font}'
        f' aria-label="{esc(a.app)}: sessions per duration">',
        f'<line x1="{left}" y1="{base}" x2="{left + slot * slots}" y2="{base}" stroke="#888"/>',
    ]
    edges = ["0", *(format_duration(b) for b in DURATION_BUCKETS)]
    for i, edge in enumerate(edges):
        x = left + i * slot
        parts.append(
            f'<line x1="{x}" y1="{base}" x2="{x}" y2="{base + 4}" stroke="#888"/>'
            f'<text x="{x}" y="{base + 16}" text-anchor="middle" fill="#444">{esc(edge)}</text>'
        )
    for i, (label, count) in enumerate(zip(labels, a.buckets, strict=True)):
        h = round(count / most * plot_h, 1)
        x = left + i * slot
        parts.append(
            f'<rect x="{x + 3}" y="{base - h}" width="{slot - 6}" height="{h}" fill="#4a78b5">'
            f"<title>{esc(label)}: {count:,} sessions</title></rect>"
        )
        if count:
            parts.append(
                f'<text x="{x + slot / 2}" y="{base - h - 4}" text-anchor="middle"'
                f' fill="#222" {_HALO}>{count:,}</text>'
            )
    bounds = (0.0, *DURATION_BUCKETS, DURATION_BUCKETS[-1] * 2)
    for j, b in enumerate(a.backtest):
        seconds = min(b.threshold.seconds, bounds[-1])
        i = max(0, bisect_left(bounds, seconds) - 1)
        line_x = left + slot * (i + (seconds - bounds[i]) / (bounds[i + 1] - bounds[i]))
        colour = _PALETTE[j % len(_PALETTE)]
        y = 16 + 15 * j
        text = f"{b.threshold.label}: {b.sessions:,} sessions, {b.session_minutes_saved:,.1f} min"
        anchor, dx = ("end", -4) if line_x > width / 2 else ("start", 4)
        parts.append(
            f'<line x1="{line_x:.1f}" y1="{y - 4}" x2="{line_x:.1f}" y2="{base}" stroke="{colour}"'
            f' stroke-width="2" stroke-dasharray="5 3"/><text x="{line_x + dx:.1f}" y="{y}"'
            f' fill="{colour}" text-anchor="{anchor}" {_HALO}>{esc(text)}</text>'
        )
    parts.append(
        f'<text x="{left + slot * slots / 2}" y="{height - 6}" text-anchor="middle"'
        ' fill="#444">session duration (sessions per bucket)</text></svg>'
    )
    return "".join(parts)


def _html_app(a: AppReport) -> str:
    esc = html.escape
    head = esc(a.app) + ("" if a.app_id is None else f" <small>{esc(a.app_id)}</small>")
    if not a.sessions:
        return f"<section><h2>{head}</h2><p>No sessions ended in this window.</p></section>"
    d = a.durations
    facts = [
        ("sessions", f"{a.sessions:,} ({a.closed_by_policy:,} closed by a policy)"),
        ("session-minutes", f"{a.session_minutes:,.1f}"),
    ]
    if d is not None:
        facts.append(
            (
                "duration",
                f"p50 {human(d.p50)} · p90 {human(d.p90)} · "
                f"p99 {human(d.p99)} · max {human(d.max)}",
            )
        )
    if a.busiest is not None:
        h = a.busiest.hour
        facts.append(
            (
                "busiest hour",
                f"{h:02d}:00-{(h + 1) % 24:02d}:00 UTC · "
                f"{a.busiest.session_minutes:,.1f} session-minutes",
            )
        )
    summary = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts)
    rows = "".join(
        f"<tr><td>&gt; {esc(format_duration(b.threshold.seconds))}</td>"
        f"<td>{esc(b.threshold.policy or '--threshold')}</td>"
        f'<td class="n">{b.sessions:,}</td>'
        f'<td class="n">{percent(b.sessions, a.sessions):.1f} %</td>'
        f'<td class="n">{b.session_minutes_saved:,.1f}</td>'
        f'<td class="n">{percent(b.session_minutes_saved, a.session_minutes):.1f} %</td></tr>'
        for b in a.backtest
    )
    table = (
        '<table><tr><th>backtest</th><th>from</th><th class="n">would close</th>'
        '<th class="n">share</th><th class="n">saves (session-min)</th><th class="n">share</th>'
        f"</tr>{rows}</table>"
        if a.backtest
        else ""
    )
    return f"<section><h2>{head}</h2><table>{summary}</table>{_svg(a)}{table}</section>"


def render_html(report: Report) -> str:
    """One self-contained page (inline CSS and SVG, no external resource: its CSP forbids
    them), every name from the config or the history escaped."""
    body = "".join(_html_app(a) for a in report.apps)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy"'
        " content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>duixwatch report: what sessions cost</title><style>{_CSS}</style></head>"
        f'<body><h1>What sessions cost</h1><p class="meta">Sessions that ended'
        f" {html.escape(window(report))}. Percentiles are {PERCENTILE_METHOD}; a threshold"
        " would have closed the sessions longer than it, saving their minutes beyond it.</p>"
        f"{body}</body></html>\n"
    )
