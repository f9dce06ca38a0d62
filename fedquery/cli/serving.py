"""What every long-running fedquery server command shares: announcing its port and serving
until SIGINT or SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path


def write_port_file(path: Path | None, port: int) -> None:
    """Write the bound port to ``path`` atomically (for scripts that start with port 0)."""
    if path is None:
        return
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)


def serve_until_signalled(server, log: logging.Logger, what: str) -> None:
    """Serve ``server`` until SIGINT or SIGTERM; ``what`` names it in the log lines."""
    def stop(signum, _frame) -> None:
        log.warning("event=stopping %s signal=%s", what, signal.Signals(signum).name)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    server.serve()
