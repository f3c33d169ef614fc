"""Without a browser the page's tests skip, saying why; under CI=true they fail instead."""

from __future__ import annotations

from pathlib import Path

import pytest
from _pytest.outcomes import Failed, Skipped

from tests.e2e.web import conftest


@pytest.mark.parametrize(("ci", "outcome"), [("", Skipped), ("false", Skipped), ("true", Failed)])
def test_a_missing_browser_skips_except_in_ci(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="no Chromium here"):
        conftest._unavailable("no Chromium here")


def test_chromium_path_wins_when_it_names_a_browser(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = tmp_path / "my-chromium"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CHROMIUM_PATH", str(fake))
    assert conftest.find_chromium() == str(fake)
    fake.chmod(0o644)  # not executable: not a browser
    assert conftest.find_chromium() != str(fake)
