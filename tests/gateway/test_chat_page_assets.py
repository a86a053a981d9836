"""The gateway serves the chat page and its assets: public, with the page's strict headers, only
the files found at start, revalidated by ETag."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from gateway.page import PAGE_CSP, WEB_DIR, PageAssets


class _Tags(HTMLParser):
    """Every start tag with its attributes, and whether any script or style is inline."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self._open: str | None = None
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._open = tag

    def handle_data(self, data: str) -> None:
        if self._open in {"script", "style"} and data.strip():
            self.inline.append(data)

    def handle_endtag(self, tag: str) -> None:
        self._open = None


def _parse(html: str) -> _Tags:
    parser = _Tags()
    parser.feed(html)
    return parser


async def test_the_page_is_public_with_a_strict_csp_and_revalidates(gateway: Any) -> None:
    response = await gateway.get("/")
    assert response.status == 200
    assert response.content_type == "text/html"
    assert response.headers["Content-Security-Policy"] == PAGE_CSP
    for directive in ("default-src 'none'", "script-src 'self'", "frame-ancestors 'none'"):
        assert directive in PAGE_CSP
    assert "unsafe-inline" not in PAGE_CSP and "unsafe-eval" not in PAGE_CSP
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-cache"
    etag = response.headers["ETag"]
    again = await gateway.get("/", headers={"If-None-Match": etag})
    assert again.status == 304
    assert await again.read() == b""


async def test_every_asset_the_page_names_is_served_from_this_origin(gateway: Any) -> None:
    html = await (await gateway.get("/")).text()
    parsed = _parse(html)
    assert parsed.inline == [], "no inline script or style (the CSP would refuse them)"
    handlers = [(tag, name) for tag, attrs in parsed.tags for name in attrs if name.startswith("on")]
    assert handlers == []
    assert not any("style" in attrs for _, attrs in parsed.tags)
    urls = [
        attrs.get("src") or attrs.get("href")
        for tag, attrs in parsed.tags
        if tag in {"script", "link", "img"}
    ]
    assert urls and all(url and url.startswith("/assets/") for url in urls)
    imports: list[str] = []
    for url in {*urls, "/assets/app.js"}:
        response = await gateway.get(url)
        assert response.status == 200, url
        assert response.headers["Content-Security-Policy"] == PAGE_CSP
        if url.endswith(".js"):
            assert response.content_type == "text/javascript"
            imports += re.findall(r'from "\./([^"]+)"', await response.text())
    assert {"api.js", "keys.js", "render.js", "stream.js"} <= set(imports)
    for name in imports:  # our modules' imports, the vendored libraries included
        response = await gateway.get(f"/assets/{name}")
        assert response.status == 200, name
        assert response.content_type == "text/javascript"


@pytest.mark.parametrize("path", ["/assets/missing.js", "/assets/..%2Fpage.py", "/assets/index.html"])
async def test_only_the_files_found_at_start_exist(gateway: Any, path: str) -> None:
    response = await gateway.get(path)
    assert response.status == 404
    assert (await response.json())["error"] == "not_found"


def test_a_name_in_both_folders_is_refused(tmp_path: Path) -> None:
    (tmp_path / "vendor").mkdir()
    (tmp_path / "app.js").write_text("1")
    (tmp_path / "vendor" / "app.js").write_text("2")
    with pytest.raises(ValueError, match=r"app\.js"):
        PageAssets.load(tmp_path)


def test_the_vendored_libraries_are_installed() -> None:
    assert (WEB_DIR / "vendor" / "marked.esm.js").is_file(), "run `make web`"
    assert (WEB_DIR / "vendor" / "purify.es.mjs").is_file(), "run `make web`"
