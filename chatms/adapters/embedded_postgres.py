"""A real PostgreSQL started through the `pgserver` package, for when DATABASE_URL is unset."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("chatms.embedded_postgres")


class EmbeddedPostgres:
    """PostgreSQL in `<data_dir>/pgdata`, reused across restarts, stopped by `stop()`."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = data_dir / "pgdata"
        self._server: Any = None

    def start(self) -> str:
        """Start (or join) the server and return its connection URL. Blocks for about a second."""
        # pgserver falls back to a per-user runtime folder when XDG_RUNTIME_DIR is unset
        # and warns about it; the folder is only used for its lock file.
        os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")  # noqa: S108
        import pgserver

        self.pgdata = self.pgdata.resolve()
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        get_server = pgserver.get_server  # type: ignore[attr-defined]  # pgserver: untyped export
        self._server = get_server(self.pgdata, cleanup_mode="stop")
        log.info("embedded PostgreSQL running in %s", self.pgdata)
        return str(self._server.get_uri())

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
            log.info("embedded PostgreSQL stopped")
