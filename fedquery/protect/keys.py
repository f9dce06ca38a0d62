"""Site secrets: the key that orders rows when contributions are capped (a keyed hash, so the
choice is deterministic for the site and unpredictable for anyone else)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def site_secret(path: str | os.PathLike[str]) -> str:
    """The site's secret, created on first use (32 random bytes, hex, file mode 0600)."""
    path = Path(path)
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32) + "\n")
    try:
        os.link(tmp, path)  # first writer wins when two processes start at once
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text().strip()
