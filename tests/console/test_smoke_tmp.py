import pytest
pytestmark = pytest.mark.nats

async def test_smoke(browser):
    r = await browser.sign_in("priya")
    print(r.status_code, r.url)
    print(r.text[:6000])
    assert r.status_code == 200
