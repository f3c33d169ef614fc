"""The README's configuration tables and the settings code say the same thing.

Every variable the settings read is in a README table (`| variable | default | meaning |`)
with its meaning, every variable there is read by chatms, and a default the README writes as
a literal is the code's default (and the code's concrete defaults are written as literals).
"""

from __future__ import annotations

import re
from dataclasses import MISSING, fields
from typing import Any

from chatms.config import Settings
from chatms.config.reading import variables
from tests.support import ROOT

# Read outside the settings, where tiktoken itself looks: the variable and the file reading it.
READ_ELSEWHERE = {"TIKTOKEN_CACHE_DIR": ROOT / "chatms" / "adapters" / "tokenizer.py"}


def readme_rows() -> dict[str, tuple[str, str]]:
    """variable -> (its default cell, its meaning) from every configuration table."""
    rows: dict[str, tuple[str, str]] = {}
    in_table = False
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("| variable | default | meaning |"):
            in_table = True
            continue
        if not line.startswith("|"):
            in_table = False
        if not in_table or line.startswith("| ---"):
            continue
        names, default, meaning = (cell.strip() for cell in line.strip("|").split(" | ", 2))
        if "*" in names:
            continue  # a pointer to another table (`TWILIO_*`, ...), which lists them
        separator = " / " if " / " in names else ", "
        listed = [name.strip("`") for name in names.split(separator)]
        defaults = default.split(separator) if len(listed) > 1 else [default]
        assert len(defaults) == len(listed), f"README row {names}: one default per variable"
        for name, value in zip(listed, defaults, strict=True):
            assert re.fullmatch(r"[A-Z][A-Z0-9_]*", name), f"README row {names}"
            assert name not in rows, f"{name} is in the README's tables twice"
            rows[name] = (value.strip(), meaning)
    return rows


def code_defaults() -> dict[str, Any]:
    """variable -> its default, for every variable the settings read."""
    found: dict[str, Any] = {}
    for section in fields(Settings):
        assert isinstance(section.default_factory, type)
        for f in variables(section.default_factory):
            found[f.metadata["env"]] = None if f.default is MISSING else f.default
    return found


def literal(value: Any) -> str | None:
    """How the README writes a default as a literal; None when there is none (unset, empty)."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None or value == ():
        return None
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ", ".join(value)
    return str(value)


def test_every_setting_is_in_the_readme_and_every_readme_variable_is_read() -> None:
    documented, read = set(readme_rows()), set(code_defaults())
    assert read - documented == set(), "settings missing from the README's tables"
    assert documented - read - set(READ_ELSEWHERE) == set(), "README variables no code reads"
    for name, path in READ_ELSEWHERE.items():
        assert f'"{name}"' in path.read_text(), f"{name} is no longer read by {path.name}"


def test_readme_defaults_are_the_code_defaults() -> None:
    """A concrete default is written as that literal; 0 (worked out from other settings, see
    sections.py) may be written as its rule instead, but a number written must be 0."""
    rows, defaults = readme_rows(), code_defaults()
    for name, default in defaults.items():
        cell, meaning = rows[name]
        assert meaning, f"{name} has no meaning in the README"
        expected = literal(default)
        written = re.fullmatch(r"`([^`]*)`(?: \([^)]*\))?", cell)  # a literal, maybe glossed
        if expected is None:
            continue  # unset or empty: the README says what that means, in words
        if default == 0 and not isinstance(default, bool):
            assert not (written and re.fullmatch(r"[0-9.]+", written.group(1))) or (
                written.group(1) == "0"), f"README: {name}'s default is {cell}, the code's 0"
            continue
        if isinstance(default, tuple):  # a list: written out in the row, in backticks
            assert f"`{expected}`" in cell + meaning, (
                f"README: {name}'s row does not list its default, `{expected}`")
            continue
        assert written and written.group(1) == expected, (
            f"README: {name}'s default is {cell!r}, the code's is {expected!r}")
