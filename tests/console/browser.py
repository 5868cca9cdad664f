"""A real browser for the console's tests: Debian's chromium, driven by Playwright, never downloaded.

``chromium_path()`` finds /usr/bin/chromium, installing Debian's package once if it is missing
and this is a machine where that is allowed (root with apt-get); otherwise the browser tests
skip with the reason. Playwright is told never to fetch a browser of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"
# WCAG 2.0, 2.1 and 2.2 at levels A and AA.
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22a", "wcag22aa"]

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
_tried: dict[str, str | None] = {}


def chromium_path() -> tuple[Path | None, str]:
    """The browser, or None and why not."""
    if CHROMIUM.exists():
        return CHROMIUM, ""
    if "why" not in _tried:
        _tried["why"] = _install()
    return (CHROMIUM, "") if CHROMIUM.exists() else (None, _tried["why"] or "chromium is not installed")


def _install() -> str | None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "/usr/bin/chromium is missing and this user cannot apt-get install it (run `make browser` as root)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "-o", "DPkg::Lock::Timeout=300", "update"],
                ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "--no-install-recommends", "chromium"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0:
            return f"`{' '.join(cmd)}` failed: {done.stderr.strip()[-300:]}"
    return None


async def axe_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's WCAG 2.2 A/AA violations on the page as it stands.

    Injected through the DevTools protocol (``page.evaluate``), which the page's Content Security
    Policy does not govern, so the CSP under test stays exactly as served.
    """
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        await page.evaluate(AXE.read_text(encoding="utf-8"))
    result = await page.evaluate(
        "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']})", WCAG_TAGS)
    return [{"id": v["id"], "impact": v["impact"], "help": v["help"],
             "nodes": [n["target"] for n in v["nodes"]][:5]} for v in result["violations"]]
