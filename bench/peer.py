"""`--peer litellm`: LiteLLM's proxy, the gateway users would otherwise pick, on the same core,
the same fake upstream and the same workload as chatms, measured in the same run.

It lives in its own virtual environment (made once, under ~/.cache/chatms-bench, from PyPI),
so none of its many dependencies touch chatms's. It listens on 127.0.0.1 only, with a master
key and no database (LiteLLM's lightest set-up that starts), and is stopped with the run.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.procs import SUT_CORE, Child, free_port

# 1.107.x was withdrawn after a compromised release; the newest ones need a package this
# machine's index lacks (litellm-proxy). This one installs with its `proxy` extra.
LITELLM_VERSION = "1.106.12"
HOME = Path(os.environ.get("CHATMS_BENCH_CACHE", Path.home() / ".cache" / "chatms-bench"))
INSTALL_SECONDS = 900


def litellm_executable(log: Path) -> Path:
    """The `litellm` command of the peer's own environment, installed on first use."""
    venv = HOME / f"litellm-{LITELLM_VERSION}"
    exe = venv / "bin" / "litellm"
    if exe.exists():
        return exe
    HOME.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, stdout=out,
                       stderr=out, timeout=120)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q",
                        f"litellm[proxy]=={LITELLM_VERSION}"], check=True, stdout=out,
                       stderr=out, timeout=INSTALL_SECONDS)
    if not exe.exists():
        raise RuntimeError(f"LiteLLM installed without its `litellm` command; see {log}")
    return exe


def config(upstream: str) -> str:
    """One model, routed to the fake upstream as an OpenAI-compatible server."""
    return (
        "model_list:\n"
        "  - model_name: gpt-4o-mini\n"
        "    litellm_params:\n"
        "      model: openai/gpt-4o-mini\n"
        f"      api_base: {upstream}\n"
        "      api_key: sk-bench\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  drop_params: true\n"
    )


class LiteLLM:
    """`litellm --config ...` pinned to chatms's core; `url` is its OpenAI base URL."""

    def __init__(self, upstream: str, work: Path) -> None:
        exe = litellm_executable(work / "litellm-install.log")
        cfg = work / "litellm.yaml"
        cfg.write_text(config(upstream))
        self.port = free_port()
        # Its clients authenticate, as chatms's do (it refuses to start without a key).
        self.key = "sk-bench-" + secrets.token_hex(16)
        env = {"LITELLM_MASTER_KEY": self.key, "LITELLM_LOG": "ERROR",
               "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False",
               "NO_DOCS": "True", "DISABLE_ADMIN_UI": "True",
               # The fake's answer is one word repeated; LiteLLM cuts a stream after 100
               # identical chunks (a loop guard), which would end every long bench answer.
               "REPEATED_STREAMING_CHUNK_LIMIT": "1000000"}
        log = work / "litellm.log"
        self.child = Child.command(
            [str(exe), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(self.port),
             "--num_workers", "1"], SUT_CORE, log, env)
        self.url = f"http://127.0.0.1:{self.port}/v1"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.child.proc.poll() is not None:
                raise RuntimeError(f"LiteLLM exited early; see {log}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health/liveliness",
                             timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.child.stop()
        raise RuntimeError(f"LiteLLM did not become healthy; see {log}")

    @property
    def version(self) -> str:
        return LITELLM_VERSION
