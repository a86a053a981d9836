"""The chat page: ``GET /`` and ``GET /assets/{name}``, the browser front every gateway serves.

The files are ``gateway/web/`` (our own modules and styles) and ``gateway/web/vendor/`` (the
npm libraries ``make web`` copies there from ``node_modules``). They are read once when the app
is created, so a request never touches the disk and only the names found then exist: nothing a
client sends becomes a file path. Asset names are flat (``app.js``, ``marked.esm.js``); a name
in both folders is refused at start.

The page's own headers are stricter than the API's defaults (which the security-headers
middleware adds only where a header is missing): a CSP that allows scripts, styles, images and
``fetch`` from this origin only (no inline script, no ``eval``, no CDN), Trusted Types so that
only DOMPurify's policy may write HTML, and no framing. Caching: ``no-cache`` with an ETag, so a
browser revalidates (304) and a new deployment is picked up at once; names are not hashed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from aiohttp import hdrs, web

from common.http import ApiError

__all__ = ["PAGE_HEADERS", "WEB_DIR", "Asset", "PageAssets", "asset", "index"]

WEB_DIR = Path(__file__).parent / "web"
INDEX = "index.html"

PAGE_CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types dompurify",
    )
)
PAGE_HEADERS: Mapping[str, str] = MappingProxyType(
    {
        "Content-Security-Policy": PAGE_CSP,
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
        "Cache-Control": "no-cache",
    }
)

_TYPES: Mapping[str, str] = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str

    @classmethod
    def read(cls, path: Path) -> Asset:
        body = path.read_bytes()
        return cls(body, _TYPES[path.suffix], '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


@dataclass(frozen=True, slots=True)
class PageAssets:
    """The page and its assets, by name, as read at start."""

    index: Asset | None
    assets: Mapping[str, Asset]

    @classmethod
    def load(cls, directory: Path = WEB_DIR) -> PageAssets:
        found: dict[str, Asset] = {}
        for folder in (directory, directory / "vendor"):
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                if not path.is_file() or path.suffix not in _TYPES or path.name == INDEX:
                    continue
                if path.name in found:
                    raise ValueError(f"asset name {path.name!r} is in both {directory} and its vendor/")
                found[path.name] = Asset.read(path)
        index_path = directory / INDEX
        return cls(Asset.read(index_path) if index_path.is_file() else None, MappingProxyType(found))


PAGE = web.AppKey("page_assets", PageAssets)


def _answer(request: web.Request, item: Asset) -> web.Response:
    headers = {**PAGE_HEADERS, hdrs.ETAG: item.etag}
    if item.etag in {tag.strip() for tag in request.headers.get(hdrs.IF_NONE_MATCH, "").split(",")}:
        return web.Response(status=304, headers=headers)
    return web.Response(body=item.body, headers={**headers, hdrs.CONTENT_TYPE: item.content_type})


async def index(request: web.Request) -> web.Response:
    """The chat page."""
    page = request.app[PAGE].index
    if page is None:
        raise ApiError(404, "not_found", "the chat page is not installed on this gateway")
    return _answer(request, page)


async def asset(request: web.Request) -> web.Response:
    """A script, stylesheet or icon of the page; only the names found at start exist."""
    item = request.app[PAGE].assets.get(request.match_info["name"])
    if item is None:
        raise ApiError(404, "not_found", "no such asset")
    return _answer(request, item)
