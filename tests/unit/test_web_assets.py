"""The web page's files: vendored libraries as recorded, and nothing inline that a strict CSP
would have to allow."""

from __future__ import annotations

import hashlib
import re
from html.parser import HTMLParser

from chatms.entrypoints.web import load_assets
from tests.support import ROOT

STATIC = ROOT / "chatms" / "entrypoints" / "web_static"


def test_vendored_files_match_their_recorded_versions_and_licences() -> None:
    notes = (STATIC / "vendor" / "README.md").read_text()
    rows = re.findall(r"^\| `([^`]+)` \| .*? \| ([\d.]+) \| .*? \| `([0-9a-f]{64})` \|$", notes,
                      re.MULTILINE)
    assert {name for name, _, _ in rows} == {"marked.esm.js", "purify.es.mjs"}
    for name, version, digest in rows:
        body = (STATIC / "vendor" / name).read_bytes()
        assert hashlib.sha256(body).hexdigest() == digest, name
        assert version.encode() in body[:400], f"{name} does not say it is version {version}"
    for licence in ("marked.LICENSE", "dompurify.LICENSE", "dompurify.LICENSE-MPL"):
        assert (STATIC / "vendor" / licence).stat().st_size > 500, licence


class _Inline(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script" and "src" not in names:
            self.found.append("inline <script>")
        if tag == "style":
            self.found.append("<style>")
        self.found += [f"{tag} {name}=" for name in names if name == "style"
                       or name.startswith("on")]
        for name, value in attrs:
            if name in ("src", "href") and value and not value.startswith("/static/"):
                self.found.append(f"{tag} {name}={value}")


def test_the_page_has_no_inline_code_or_outside_references() -> None:
    parser = _Inline()
    parser.feed((STATIC / "index.html").read_text())
    assert parser.found == []


def test_what_is_served_is_the_page_its_code_and_the_vendored_libraries() -> None:
    served = set(load_assets())
    assert {"index.html", "app.js", "api.js", "chatlist.js", "conversation.js", "state.js",
            "view.js", "markdown.js", "style.css", "live.js",
            "icon.svg", "vendor/marked.esm.js", "vendor/purify.es.mjs"} == served
    code = "".join((STATIC / name).read_text() for name in served if name.endswith(".js")
                   and not name.startswith("vendor/"))
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "localStorage", "document.cookie"):
        assert sink not in code, sink
