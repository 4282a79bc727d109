"""The playground's serving rules, in process (fake engine): public page, keyed API, strict
headers, `--no-playground`, and a page that ships no inline code and loads nothing remote."""

from __future__ import annotations

import argparse
import asyncio
import re

import httpx
import pytest

from server.app import build_app
from server.playground import CONTENT_SECURITY_POLICY, FILES, static_file
from server.settings import ServeSettings, add_serve_arguments, settings_from_args
from tests.support.fake_engine import FakeEngine, fake_model

KEY = "playground-key-0123"


def get_all(paths: list[str], **settings) -> dict[str, httpx.Response]:
    app = build_app(ServeSettings(**settings), FakeEngine(), fake_model())

    async def go() -> dict[str, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return {path: await client.get(path) for path in paths}

    return asyncio.run(go())


def test_page_and_assets_are_public_with_strict_headers() -> None:
    responses = get_all([*FILES, "/v1/models", "/docs", "/metrics"], api_key=[KEY])
    for path, (name, media_type) in FILES.items():
        response = responses[path]
        assert response.status_code == 200, path
        assert response.content == static_file(name)
        assert response.headers["content-type"] == media_type
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["x-content-type-options"] == "nosniff"
    # Everything else still needs the key, /docs included.
    for path in ("/v1/models", "/docs", "/metrics"):
        assert responses[path].status_code == 401, path
    # /docs stays where it was, and the page is not part of the API's schema.
    open_server = get_all(["/docs", "/openapi.json"])
    assert open_server["/docs"].status_code == 200
    assert not {"/", *FILES} & set(open_server["/openapi.json"].json()["paths"])


def test_csp_forbids_inline_code_and_other_origins() -> None:
    directives = dict(d.strip().split(" ", 1) for d in CONTENT_SECURITY_POLICY.split(";"))
    assert directives["default-src"] == "'none'"
    for name in ("script-src", "style-src", "connect-src"):
        assert directives[name] == "'self'", name
    assert "unsafe" not in CONTENT_SECURITY_POLICY
    assert directives["frame-ancestors"] == "'none'"


def test_static_files_have_no_inline_code_no_remote_urls_no_innerhtml() -> None:
    html = static_file("index.html").decode()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline <script>"
    assert "<style" not in html and " style=" not in html
    assert not re.search(r"\son[a-z]+=", html), "inline event handler"
    for name in ("index.html", "app.js", "style.css"):
        text = static_file(name).decode()
        # No CDN, fonts or other remote resources: hospital networks are often closed.
        assert not re.search(r"(src|href)=\"?(https?:)?//", text), name
        assert "@import" not in text and "url(" not in text, name
    js = static_file("app.js").decode()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in js, sink


def test_no_playground_flag_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert get_all(["/"], playground=False)["/"].status_code == 404
    # Without the page, / is not a public path any more.
    assert get_all(["/"], playground=False, api_key=[KEY])["/"].status_code == 401

    def parse(*argv: str) -> ServeSettings:
        parser = argparse.ArgumentParser()
        add_serve_arguments(parser)
        return settings_from_args(parser.parse_args(list(argv)))

    assert parse().playground is True
    assert parse("--no-playground").playground is False
    monkeypatch.setenv("HUATUO_PLAYGROUND", "0")
    assert parse().playground is False
    assert parse("--playground").playground is True
