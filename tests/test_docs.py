"""/docs and /redoc work on a network without internet: every asset comes from the app."""

from __future__ import annotations

import re

import pytest
from httpx import AsyncClient

# Every URL a page loads: src=, href= and spec-url= attributes, and "url:" in its script.
_REFERENCES = re.compile(
    r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']|url\s*[:(]\s*["']([^"']+)["']"""
)
_CONTENT_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png", ".json": "json"}


def _references(html: str) -> list[str]:
    return [a or b for a, b in _REFERENCES.findall(html)]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_load_nothing_from_another_host(client: AsyncClient, page: str) -> None:
    response = await client.get(page)
    assert response.status_code == 200
    html = response.text
    # No CDN, no web fonts, no validator badge: nothing that leaves the hospital network.
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html, re.IGNORECASE), html
    references = _references(html)
    assert "/openapi.json" in references
    assets = [r for r in references if r != "/openapi.json"]
    assert len(assets) >= 2, references  # the UI's script and at least its icon
    for url in references:
        assert url.startswith("/"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        suffix = url[url.rindex(".") :]
        assert _CONTENT_TYPES[suffix] in asset.headers["content-type"], (url, asset.headers)
        assert len(asset.content) > 0


async def test_swagger_ui_is_a_version_that_renders_openapi_3_1(client: AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.1.")
    html = (await client.get("/docs")).text
    script = next(r for r in _references(html) if r.endswith(".js"))
    bundle = (await client.get(script)).text
    # Swagger UI 4 shows "Unable to render this definition" for anything but OpenAPI 3.0.n.
    version = re.search(r'PACKAGE_VERSION:"(\d+)\.\d+\.\d+"', bundle)
    assert version is not None and int(version.group(1)) >= 5, version


async def test_swagger_ui_oauth2_redirect_page_is_served(client: AsyncClient) -> None:
    response = await client.get("/docs/oauth2-redirect")
    assert response.status_code == 200
    assert not re.search(r"https?://", response.text)
