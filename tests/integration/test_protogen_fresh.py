"""The committed generated code matches what the compiler makes of protos/ today."""

from __future__ import annotations

from pathlib import Path

from chatms.protos import TARGET, generate


def test_generated_code_is_not_stale(tmp_path: Path) -> None:
    """Regenerating from protos/ changes nothing; run `chatms protos` when this fails."""
    files = generate(tmp_path)
    committed = sorted(p.relative_to(TARGET) for p in TARGET.rglob("*")
                       if p.is_file() and "__pycache__" not in p.parts)
    assert files == committed
    for rel in files:
        assert (tmp_path / rel).read_bytes() == (TARGET / rel).read_bytes(), f"{rel} is stale"
