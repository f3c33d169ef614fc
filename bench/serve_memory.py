"""`chatms serve` with persistence switched off: the same App, built by the same builder,
over the tests' in-memory chat repository (tests/fakes/memory.py).

Only for the benchmark's "TTFT with vs without persistence" comparison; same settings
(environment), same doors, same upstream client, same event loop choice.
Run: python -m bench.serve_memory
"""

from __future__ import annotations

import asyncio
import signal

from chatms.builder import build_app
from chatms.collector import tune_collector
from chatms.config import Settings, load_settings
from chatms.entrypoints.cli import configure_logging, run
from chatms.observability.metrics import Metrics
from chatms.storage import Storage
from tests.fakes.memory import MemoryChatRepository


async def memory_storage(settings: Settings, metrics: Metrics) -> Storage:
    """Chats in a dict; text channels off (they need PostgreSQL's queue)."""
    return Storage(chats=MemoryChatRepository(), inbound=None)


async def serve_forever() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    settings = load_settings()
    configure_logging(settings)
    app = await build_app(settings, storage=memory_storage)
    await app.start()
    tune_collector()
    try:
        await stop.wait()
    finally:
        await app.stop()


if __name__ == "__main__":
    run(serve_forever())
