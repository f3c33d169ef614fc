"""The tests' port picker: no port is handed out twice, in one test process or across two."""

from __future__ import annotations

import subprocess
import sys

from tests.support import ROOT, free_port

PICK = "from tests.support import free_port; print(*(free_port() for _ in range(300)))"


def test_no_port_is_handed_out_twice_here_or_to_another_test_process() -> None:
    ours = [free_port() for _ in range(300)]
    assert len(set(ours)) == len(ours)
    assert all(20_000 <= port < 32_000 for port in ours)
    # While this process holds its ports' blocks, another test process gets none of them.
    theirs = subprocess.run([sys.executable, "-c", PICK], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=True).stdout.split()
    assert len(theirs) == 300
    assert {port // 100 for port in ours}.isdisjoint(int(port) // 100 for port in theirs)
