"""The consultation playground: a static page at `/` that talks to the gateway's own API.

Three files shipped in the package (no CDN, no build step, no network access): `index.html`,
`app.js`, `style.css`. The page holds no secrets, so it is public; every API call it makes goes
through the same API keys as any other client. Conversations stay in the browser.
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.responses import Response

# No inline script or style anywhere, no third-party origin, no framing, no form posts.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
# URL path -> (file in static/, media type)
FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/playground/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/playground/style.css": ("style.css", "text/css; charset=utf-8"),
}
# Paths the API-key middleware lets through without a key: the page and its assets only.
PUBLIC_PATHS = frozenset(FILES)


def is_public_path(path: str) -> bool:
    return path in PUBLIC_PATHS


def static_file(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


def page_size() -> int:
    """Bytes of the whole page (html + js + css), as reported in docs/playground.md."""
    return sum(len(static_file(name)) for name, _ in FILES.values())


def add_playground(app: FastAPI) -> None:
    """Serve the page at `/` and its assets under `/playground/`, with a strict CSP."""
    for path, (name, media_type) in FILES.items():
        app.add_api_route(path, _endpoint(static_file(name), media_type),
                          methods=["GET", "HEAD"], include_in_schema=False,
                          name=f"playground:{name}")


def _endpoint(body: bytes, media_type: str):
    async def serve() -> Response:
        return Response(body, media_type=media_type, headers=SECURITY_HEADERS)

    return serve
