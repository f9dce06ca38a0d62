"""Key files and public-key text for secure aggregation.

- **Private keys** live in files of mode 0600, created atomically and never overwritten (a
  rotated key goes to a new path).  A file that others may read is refused when loaded.
- **Public keys** travel as base64 of their raw bytes (32 bytes for X25519 and Ed25519): that
  is how they appear in ``federation.yaml``.

Nothing here logs or prints key material.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from fedquery.errors import ConfigError

PRIVATE_MODE = 0o600
RAW_PUBLIC_KEY_BYTES = 32


def write_private_file(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to a new file of mode 0600 (atomically: a temporary file, then a
    link).  Refuses to replace an existing file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    try:
        os.fchmod(fd, PRIVATE_MODE)  # whatever the umask
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise ConfigError(f"refusing to overwrite the existing private key file {path}; "
                              "write a rotated key to a new path", path=str(path)) from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_private_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a private key file; refuses a file that its group or others may read."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"private key file {path} does not exist", path=str(path)) from None
    if not stat.S_ISREG(mode):
        raise ConfigError(f"private key file {path} is not a regular file", path=str(path))
    if mode & 0o077:
        raise ConfigError(f"private key file {path} is readable by others (mode "
                          f"{stat.S_IMODE(mode):o}); run chmod 600 on it", path=str(path))
    return path.read_bytes()


def save_private_key(path: str | os.PathLike[str], key) -> Path:
    """Store an X25519 or Ed25519 private key as unencrypted PKCS#8 PEM, mode 0600."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return write_private_file(path, pem)


def load_private_key(path: str | os.PathLike[str], key_type: type):
    """The private key in the PEM file ``path``, which must be a ``key_type`` (e.g.
    ``X25519PrivateKey``)."""
    data = read_private_file(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"{path} is not an unencrypted PEM private key",
                          path=str(path)) from None
    if not isinstance(key, key_type):
        raise ConfigError(f"{path} holds a {type(key).__name__}, expected a "
                          f"{key_type.__name__}", path=str(path))
    return key


def public_key_text(key) -> str:
    """The public half of a private (or public) X25519/Ed25519 key as base64 of its raw
    32 bytes, the form ``federation.yaml`` carries."""
    public = key.public_key() if hasattr(key, "public_key") else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def decode_public_key(text: str | bytes, *, owner: str = "a site") -> bytes:
    """The raw 32 bytes of a base64 public key (as read from ``federation.yaml``)."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise ConfigError(f"the public key of {owner} is not valid base64") from None
    if len(raw) != RAW_PUBLIC_KEY_BYTES:
        raise ConfigError(f"the public key of {owner} has {len(raw)} bytes, expected "
                          f"{RAW_PUBLIC_KEY_BYTES}")
    return raw
