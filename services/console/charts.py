"""Bar charts drawn on the server as SVG: no script, no library, readable without colour.

Each chart is an image with a title and a description for screen readers; the table beside
it holds the same numbers and is the full text alternative. Values are written at the end
of each bar, so the chart does not rely on reading lengths alone.
"""

from __future__ import annotations

from html import escape

BAR = 28
GAP = 12
LABEL_WIDTH = 220
BAR_WIDTH = 360
VALUE_WIDTH = 60
BLUE = "#1d70b8"  # GOV.UK blue: contrast 5.2:1 against white
TEXT = "#0b0c0c"


def bar_chart(chart_id: str, title: str, bars: list[tuple[str, int]], unit: str) -> str:
    if not bars:
        return ""
    top = max(value for _, value in bars) or 1
    height = len(bars) * (BAR + GAP) + GAP
    width = LABEL_WIDTH + BAR_WIDTH + VALUE_WIDTH
    summary = "; ".join(f"{label}: {value} {unit}" for label, value in bars)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="console-chart" role="img" '
        f'viewBox="0 0 {width} {height}" width="100%" aria-labelledby="{chart_id}-title {chart_id}-desc">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(summary)}</desc>',
    ]
    for i, (label, value) in enumerate(bars):
        y = GAP + i * (BAR + GAP)
        length = round(BAR_WIDTH * value / top)
        short = label if len(label) <= 30 else label[:29] + "…"
        parts += [
            f'<text x="{LABEL_WIDTH - 8}" y="{y + BAR * 0.7:.0f}" text-anchor="end" fill="{TEXT}" '
            f'font-family="Arial, sans-serif" font-size="16">{escape(short)}</text>',
            f'<rect x="{LABEL_WIDTH}" y="{y}" width="{max(length, 1)}" height="{BAR}" fill="{BLUE}"/>',
            f'<text x="{LABEL_WIDTH + length + 6}" y="{y + BAR * 0.7:.0f}" fill="{TEXT}" '
            f'font-family="Arial, sans-serif" font-size="16" font-weight="bold">{value}</text>',
        ]
    parts.append("</svg>")
    return "".join(parts)
