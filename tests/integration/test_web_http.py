"""The web page's HTTP side: files and security headers, the switch, and CORS, over the wire."""

from __future__ import annotations

import pytest

from tests.integration.http_client import AUTH, client
from tests.support import new_user

ORIGIN = "http://app.example.test:3000"
PREFLIGHT = {"origin": ORIGIN, "access-control-request-method": "POST",
             "access-control-request-headers": "authorization, content-type"}


def assert_locked_down(headers: object) -> None:
    csp = headers["content-security-policy"]  # type: ignore[index]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    for name in ("script-src", "style-src", "img-src", "connect-src"):
        assert directives[name] == "'self'", name
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert headers["x-content-type-options"] == "nosniff"  # type: ignore[index]
    assert headers["referrer-policy"] == "no-referrer"  # type: ignore[index]


async def test_page_and_files_are_served_with_strict_headers(start_app) -> None:
    app = await start_app()
    async with client(app) as http:
        page = await http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert_locked_down(page.headers)
        for path, kind in (("/static/app.js", "text/javascript"),
                           ("/static/vendor/purify.es.mjs", "text/javascript"),
                           ("/static/style.css", "text/css"),
                           ("/static/icon.svg", "image/svg+xml")):
            reply = await http.get(path)
            assert reply.status_code == 200, path
            assert reply.headers["content-type"].startswith(kind), path
            assert_locked_down(reply.headers)
        etag = (await http.get("/static/app.js")).headers["etag"]
        again = await http.get("/static/app.js", headers={"if-none-match": etag})
        assert again.status_code == 304 and again.content == b""
        for hidden in ("/static/vendor/README.md", "/static/vendor/marked.LICENSE",
                       "/static/../web.py", "/static/nothing.js"):
            missing = await http.get(hidden)
            assert missing.status_code == 404, hidden
            assert missing.json()["error"]["code"] == "not_found"


async def test_page_off_makes_root_a_json_404_again(start_app) -> None:
    app = await start_app(WEB_UI_ENABLED="false")
    async with client(app) as http:
        for path in ("/", "/static/app.js"):
            reply = await http.get(path)
            assert reply.status_code == 404
            assert reply.json()["error"]["code"] == "not_found"
        assert (await http.get("/chats", params={"user_id": "u"}, headers=AUTH)).status_code == 200


async def test_cors_is_closed_by_default(start_app) -> None:
    app = await start_app()
    async with client(app) as http:
        preflight = await http.options("/chat", headers=PREFLIGHT)
        assert "access-control-allow-origin" not in preflight.headers
        assert preflight.status_code == 405
        listed = await http.get("/chats", params={"user_id": "u"},
                                headers={**AUTH, "origin": ORIGIN})
        assert listed.status_code == 200
        assert "access-control-allow-origin" not in listed.headers


@pytest.mark.parametrize(
    "path", ["/chat", "/chats", "/chats/00000000-0000-0000-0000-000000000000/end"])
async def test_a_listed_origin_gets_its_preflight_and_its_answers(start_app, path: str) -> None:
    app = await start_app(CORS_ALLOW_ORIGINS=f"{ORIGIN}, https://other.example.test")
    async with client(app) as http:
        preflight = await http.options(path, headers=PREFLIGHT)
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        assert "POST" in preflight.headers["access-control-allow-methods"]
        allowed_headers = preflight.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed_headers and "content-type" in allowed_headers
        assert "access-control-allow-credentials" not in preflight.headers
        assert "origin" in preflight.headers["vary"].lower()

        user = new_user()
        turn = await http.post("/chat", headers={**AUTH, "origin": ORIGIN},
                               json={"user_id": user, "user_message": "hello"})
        assert turn.status_code == 200
        assert turn.headers["access-control-allow-origin"] == ORIGIN
        refused = await http.get("/chats", params={"user_id": user},
                                 headers={"origin": ORIGIN})  # no token: still 401
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == ORIGIN


async def test_an_unlisted_origin_is_refused(start_app) -> None:
    app = await start_app(CORS_ALLOW_ORIGINS=ORIGIN)
    async with client(app) as http:
        for origin in ("http://evil.example.test", "http://app.example.test:3001", "null"):
            preflight = await http.options("/chat", headers={**PREFLIGHT, "origin": origin})
            assert preflight.status_code == 400, origin
            assert "access-control-allow-origin" not in preflight.headers
            plain = await http.get("/chats", params={"user_id": "u"},
                                   headers={**AUTH, "origin": origin})
            assert "access-control-allow-origin" not in plain.headers
        wrong_header = await http.options("/chat", headers={
            **PREFLIGHT, "access-control-request-headers": "authorization, x-secret"})
        assert wrong_header.status_code == 400
