"""Every page is served by the project itself (no CDN) and works as plain HTML forms, without JavaScript."""

from __future__ import annotations

import re

import pytest

from tests.console.test_practitioner_journey import NEW, add_invitees, answer_up_to_invitees

pytestmark = pytest.mark.nats

ASSET_REF = re.compile(r'<(?:link|script|img)\b[^>]*\b(?:href|src)="([^"]+)"', re.I)
FORM = re.compile(r"<form\b([^>]*)>", re.I)


async def journey_pages(browser) -> dict[str, str]:
    pages: dict[str, str] = {}

    async def visit(path: str) -> None:
        r = await browser.get(path)
        assert r.status_code == 200, path
        pages[path] = r.text

    await visit("/sign-in")
    await browser.sign_in("priya")
    await visit("/requests")
    await answer_up_to_invitees(browser)
    for slug in ("urgent-risk", "check-network", "check-hips", "case-reference", "agencies", "reason",
                 "description", "invitees"):
        await visit(f"{NEW}/{slug}")
    await visit(f"{NEW}/check-hips/guidance")
    await add_invitees(browser)
    await visit(f"{NEW}/check-answers")
    await browser.post(f"{NEW}/check-answers")
    pages["confirmation"] = browser.page
    await browser.get(f"{NEW}/urgent-risk")
    await browser.post(f"{NEW}/urgent-risk", {"immediate_risk": "yes"})
    pages["stop"] = browser.page
    await browser.post("/sign-out")
    await browser.sign_in("fac-1")
    await visit("/queue")
    return pages


async def test_pages_use_only_assets_the_console_serves_itself(browser):
    pages = await journey_pages(browser)
    refs = {ref for html in pages.values() for ref in ASSET_REF.findall(html)}
    assert "/assets/govuk/govuk-frontend.min.css" in refs and "/assets/console.js" in refs
    for ref in refs:
        assert ref.startswith("/") and not ref.startswith("//"), f"{ref} is not served by the console"
        r = await browser.client.get(ref)
        assert r.status_code == 200, ref
    for html in pages.values():
        assert not re.search(r'(?:src|href)="(?:https?:)?//', html), "a page loads something from elsewhere"
    css = await browser.client.get("/assets/govuk/govuk-frontend.min.css")
    assert css.headers["content-type"].startswith("text/css") and ".govuk-button" in css.text
    assert "@font-face" not in css.text  # GDS Transport is for GOV.UK services only
    js = await browser.client.get("/assets/govuk/govuk-frontend.min.js")
    assert "initAll" in js.text
    init = await browser.client.get("/assets/console.js")
    assert "./govuk/govuk-frontend.min.js" in init.text


async def test_every_form_is_a_plain_post_and_no_page_needs_script_to_work(browser):
    pages = await journey_pages(browser)
    for name, html in pages.items():
        for attrs in FORM.findall(html):
            assert 'method="post"' in attrs, (name, attrs)
        assert not re.search(r"\son[a-z]+\s*=", html, re.I), f"{name} has an inline event handler"
        assert 'href="javascript:' not in html
        # The only scripts: GOV.UK Frontend's progressive enhancement, loaded as a module, and the
        # template's one js-enabled line, which carries the response's CSP nonce.
        scripts = re.findall(r"<script\b[^>]*>", html)
        assert all('type="module"' in s or re.fullmatch(r'<script nonce="[^"]+">', s) for s in scripts), scripts


async def test_the_content_security_policy_allows_no_inline_script_but_the_nonced_line(browser):
    r = await browser.get("/sign-in")
    csp = r.headers["content-security-policy"]
    nonce = re.search(r'<script nonce="([^"]+)">', r.text).group(1)
    assert f"script-src 'self' 'nonce-{nonce}'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    again = await browser.get("/sign-in")
    assert re.search(r'<script nonce="([^"]+)">', again.text).group(1) != nonce  # fresh for every response
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_accessibility_smoke_every_page_has_a_language_title_one_heading_and_labelled_fields(browser):
    """A smoke check only: the full WCAG 2.2 audit (axe-core in a real browser) is still to come."""
    pages = await journey_pages(browser)
    for name, html in pages.items():
        assert '<html lang="en"' in html, name
        assert re.search(r"<title>[^<]+ – Re-think</title>", html), name
        assert len(re.findall(r"<h1\b", html)) == 1, name
        assert 'href="#main-content"' in html and 'id="main-content"' in html, name  # skip link
        ids = re.findall(r'\bid="([^"]+)"', html)
        assert len(ids) == len(set(ids)), f"{name}: duplicate ids"
        labels = set(re.findall(r'<label\b[^>]*\bfor="([^"]+)"', html))
        for tag in re.findall(r"<(?:input|textarea|select)\b[^>]*>", html):
            if 'type="hidden"' in tag:
                continue
            field_id = re.search(r'\bid="([^"]+)"', tag)
            assert field_id and field_id.group(1) in labels, f"{name}: unlabelled field {tag}"
