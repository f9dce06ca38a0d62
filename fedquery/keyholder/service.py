"""The key holder service: BFV keys per epoch, and one checked decryption per query id.

State (``state_dir``, mode 0700; one process at a time, enforced by an exclusive lock file):

- ``keys/epoch-NNNNNNNN-PROFILE.bfv``: the private context of each profile (``standard``,
  ``wide``) of the current epoch, mode 0600 (:meth:`fedquery.protect.he.KeyHolderKeys.save`).
  Files of any other epoch are deleted at rotation and at start.
- ``keyholder.sqlite`` (WAL, ``synchronous=FULL``): the current epoch, the releases made in
  it, and every query id ever attempted (with its outcome, never a value).  A query id is
  recorded — durably — before anything else is checked or decrypted, so it is attempted at
  most once, whatever the outcome.

A release (:meth:`KeyHolderService.release`) checks, in order:

(a) the request's epoch is the current one (else :class:`StaleEpoch`);
(b) the query id was never attempted before (else ``InternalError``; the id is burnt now);
(c) the participants are exactly the contributing sites, at least two, each with a published
    Ed25519 key; the layout is sane (known profile, positive length, bound within the
    profile's safe range, check columns present when the requirements need them);
(d) every contribution was encrypted under the current public context of the layout's
    profile and carries a valid signature over (query id, site, participants, context
    fingerprint, ciphertexts, layout digest, the site's own requirements);
(e) the key holder's own sum of the signed ciphertexts equals the coordinator's ``summed``
    (byte for byte; else after re-serialising the coordinator's sum with this TenSEAL, which
    compares the ciphertexts themselves) — only its own sum is decrypted, never a
    coordinator-built ciphertext;
(f) every decrypted slot is within the layout's bound (a wrapped, partial or tampered sum
    decrypts to values uniform mod t, which fail this);

then decodes the slots and applies the combined disclosure checks with the strictest of the
sites' signed requirements.  A failure in (d)–(f) rotates the keys (a new epoch; the old keys
are deleted) before the error is raised; so do ``epoch_queries`` successful releases.

Nothing here logs or reports a decrypted value: errors say which check failed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hmac
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pyarrow as pa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedquery.errors import (
    ConfigError,
    DataError,
    Error,
    InternalError,
    OperationalError,
)
from fedquery.ir import CellChecks, Requirements, SecureLayout, SecureReleaseRequest
from fedquery.policy import strictest
from fedquery.protect import he, signing, slots
from fedquery.protect.disclosure import protect_secure_cells
from fedquery.protect.masks import canonical_participants
from fedquery.errors import StaleEpoch

log = logging.getLogger(__name__)

__all__ = ["KeyHolderService", "StaleEpoch"]

DB_NAME = "keyholder.sqlite"
LOCK_NAME = "keyholder.lock"
KEYS_DIR = "keys"
_KEY_FILE = re.compile(r"^epoch-(\d{8})-([a-z]+)\.bfv$")
_BUSY_S = 30.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS query_ids (
    query_id TEXT PRIMARY KEY, epoch INTEGER NOT NULL, at REAL NOT NULL,
    outcome TEXT NOT NULL);
"""


class _Refused(Exception):
    """An integrity check in (d)–(f) failed: rotate, then raise ``InternalError(message)``."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check
        self.message = message


class KeyHolderService:
    """The key holder: see the module docstring.

    ``site_signing_keys`` maps site names to their raw 32-byte Ed25519 public keys (from
    ``federation.yaml``); ``epoch_queries`` successful releases end an epoch."""

    def __init__(self, state_dir: str | os.PathLike[str],
                 site_signing_keys: Mapping[str, bytes], *, epoch_queries: int = 1000) -> None:
        if not isinstance(epoch_queries, int) or isinstance(epoch_queries, bool) \
                or epoch_queries < 1:
            raise ConfigError("epoch_queries must be a whole number >= 1")
        self.state_dir = Path(state_dir)
        self.epoch_queries = epoch_queries
        self._signing_keys = self._check_signing_keys(site_signing_keys)
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._keys: dict[str, he.KeyHolderKeys] = {}
        self._contexts: dict[str, he.PublicContext] = {}
        self._epoch = 0
        self._releases = 0
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # -- set-up ---------------------------------------------------------------------------------

    @staticmethod
    def _check_signing_keys(keys: Mapping[str, bytes]) -> dict[str, bytes]:
        checked = {}
        for site, raw in dict(keys).items():
            if not isinstance(site, str) or not site:
                raise ConfigError("site names of signing keys must be non-empty text")
            try:
                Ed25519PublicKey.from_public_bytes(bytes(raw))
            except (ValueError, TypeError):
                raise ConfigError(f"the signing public key of {site!r} is not an Ed25519 "
                                  "key") from None
            checked[site] = bytes(raw)
        return checked

    def _open(self) -> None:
        created = not self.state_dir.exists()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if created:
            os.chmod(self.state_dir, 0o700)
        (self.state_dir / KEYS_DIR).mkdir(mode=0o700, exist_ok=True)
        fd = os.open(self.state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"another key holder is already using {self.state_dir}",
                              path=str(self.state_dir)) from None
        self._lock_fd = fd
        try:
            db = sqlite3.connect(self.state_dir / DB_NAME, timeout=_BUSY_S,
                                 isolation_level=None, check_same_thread=False)
            self._db = db
            if db.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
                raise sqlite3.OperationalError("cannot switch to WAL journal mode")
            db.execute("PRAGMA synchronous = FULL")
            with self._tx():
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(statement)
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.Error as err:
            raise OperationalError(f"the key holder's state {self.state_dir / DB_NAME} cannot "
                                   f"be opened: {err}") from None
        self._epoch = int(meta.get("epoch", 0))
        self._releases = int(meta.get("releases", 0))
        if self._epoch == 0:
            self._rotate("first start")
            return
        try:
            keys = {name: he.KeyHolderKeys.load(self._key_path(self._epoch, name))
                    for name in he.PROFILES}
        except ConfigError as err:
            # Missing, unreadable or too widely readable key files: never use them again.
            log.warning("event=keys_unusable epoch=%d reason=%s", self._epoch,
                        type(err).__name__)
            self._rotate("key files of the current epoch are unusable")
            return
        for name, key in keys.items():
            if key.profile.name != name:
                self._rotate("a key file holds another profile")
                return
        self._install(keys)
        self._delete_other_epochs()
        log.info("event=keyholder_started epoch=%d", self._epoch)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _key_path(self, epoch: int, profile: str) -> Path:
        return self.state_dir / KEYS_DIR / f"epoch-{epoch:08d}-{profile}.bfv"

    def _install(self, keys: dict[str, he.KeyHolderKeys]) -> None:
        self._keys = keys
        self._contexts = {name: key.public_context() for name, key in keys.items()}

    def _delete_other_epochs(self) -> None:
        for path in (self.state_dir / KEYS_DIR).iterdir():
            match = _KEY_FILE.match(path.name)
            if match is None or int(match.group(1)) != self._epoch:
                path.unlink(missing_ok=True)

    def _set_meta(self, **values: int) -> None:
        with self._tx() as db:
            for key, value in values.items():
                db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) "
                           "DO UPDATE SET value = excluded.value", (key, int(value)))

    def _rotate(self, reason: str) -> None:
        """A new epoch: fresh keys for every profile, saved, then made current (one
        transaction), then every other epoch's key files deleted."""
        epoch = self._epoch + 1
        keys = {name: he.KeyHolderKeys.generate(profile) for name, profile in he.PROFILES.items()}
        for name, key in keys.items():
            path = self._key_path(epoch, name)
            path.unlink(missing_ok=True)  # left over by a rotation that crashed midway
            key.save(path)
        self._set_meta(epoch=epoch, releases=0)
        self._epoch, self._releases = epoch, 0
        self._install(keys)
        self._delete_other_epochs()
        log.warning("event=keys_rotated epoch=%d reason=%s", epoch, reason)

    # -- public API -----------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        with self._lock:
            return self._epoch

    def public_context(self, profile: str) -> tuple[int, bytes, str]:
        """``(epoch, public context blob, its SHA-256 fingerprint)`` of ``profile`` in the
        current epoch."""
        with self._lock:
            self._check_open()
            key = self._keys.get(profile)
            if key is None:
                raise DataError(f"unknown encryption profile {profile!r} (known: "
                                f"{', '.join(he.PROFILES)})")
            return self._epoch, key.public_context_bytes(), key.fingerprint()

    def health(self) -> dict:
        with self._lock:
            self._check_open()
            return {"status": "ok", "epoch": self._epoch,
                    "profiles": sorted(self._keys), "sites": sorted(self._signing_keys)}

    def rotate(self, reason: str = "requested by the operator") -> int:
        """Start a new epoch now; returns it."""
        with self._lock:
            self._check_open()
            self._rotate(reason)
            return self._epoch

    def release(self, request: SecureReleaseRequest) -> tuple[pa.Table, dict]:
        """Decrypt the federation-wide sum of ``request`` once and release its combined cells:
        ``(table, {"suppressed": n, "participants": [...], "epoch": e})``."""
        if not isinstance(request, SecureReleaseRequest):
            raise TypeError("release needs a SecureReleaseRequest")
        query_id = request.query_id
        if not isinstance(query_id, str) or not query_id:
            raise DataError("a release request needs a query id")
        with self._lock:
            self._check_open()
            self._burn(query_id)  # (b), before anything else: one attempt per query id
            try:
                table, info = self._release(request)
            except Error as err:
                self._outcome(query_id, f"refused:{type(err).__name__}")
                raise
            except BaseException:
                self._outcome(query_id, "failed")
                raise
            self._outcome(query_id, "released")
            self._releases += 1
            self._set_meta(releases=self._releases)
            log.info("event=released query_id=%s sites=%d suppressed=%d epoch=%d", query_id,
                     len(info["participants"]), info["suppressed"], info["epoch"])
            if self._releases >= self.epoch_queries:
                self._rotate(f"{self._releases} releases in this epoch")
            return table, info

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None
            self._keys, self._contexts = {}, {}

    def __enter__(self) -> KeyHolderService:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"KeyHolderService({str(self.state_dir)!r}, epoch={self._epoch})"

    # -- the checks -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._db is None:
            raise OperationalError("the key holder service is closed")

    def _burn(self, query_id: str) -> None:
        try:
            with self._tx() as db:
                db.execute("INSERT INTO query_ids (query_id, epoch, at, outcome) "
                           "VALUES (?, ?, ?, 'attempted')", (query_id, self._epoch, time.time()))
        except sqlite3.IntegrityError:
            log.warning("event=refused query_id=%s check=replay", query_id)
            raise InternalError(f"query id {query_id!r} was already used: the key holder "
                                "decrypts at most once per query id (a replay?); re-run the "
                                "query with a new id") from None

    def _outcome(self, query_id: str, outcome: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE query_ids SET outcome = ? WHERE query_id = ?",
                       (outcome, query_id))

    def _release(self, request: SecureReleaseRequest) -> tuple[pa.Table, dict]:
        layout = request.layout
        query_id = request.query_id
        # (a) the current epoch
        if request.epoch != self._epoch:
            log.warning("event=refused query_id=%s check=epoch", query_id)
            raise StaleEpoch(f"query {query_id!r} was encrypted under key epoch "
                             f"{request.epoch}, but the key holder is at epoch {self._epoch}: "
                             "fetch the public context again and re-run the query with a new "
                             "query id")
        # (c) the participants and the layout
        participants = self._check_participants(request)
        profile = self._check_layout(layout)
        requirements = strictest(c.requirements for c in request.contributions)
        checks = self._cell_checks(layout, requirements)
        epoch = self._epoch
        # (d)–(f): any failure rotates the keys
        try:
            values = self._verify_and_decrypt(request, participants, profile)
        except _Refused as refusal:
            log.warning("event=refused query_id=%s check=%s", query_id, refusal.check)
            self._rotate(f"failed check: {refusal.check}")
            raise InternalError(f"query {query_id!r} refused: {refusal.message}; nothing was "
                                f"released, and the key holder rotated its keys (now epoch "
                                f"{self._epoch})") from None
        # (g) the combined disclosure checks
        combined = slots.decode(values, layout, sites=len(request.participants))
        table, suppressed = protect_secure_cells(combined, checks, requirements.min_sites)
        return table, {"suppressed": suppressed, "participants": list(participants),
                       "epoch": epoch}

    def _check_participants(self, request: SecureReleaseRequest) -> tuple[str, ...]:
        try:
            participants = canonical_participants(request.participants)
        except DataError as err:
            raise InternalError(f"the participant list is invalid: {err}") from None
        sites = [c.site for c in request.contributions]
        twice = sorted({s for s in sites if sites.count(s) > 1})
        if twice:
            raise InternalError(f"site(s) {', '.join(twice)} contributed more than once")
        missing = sorted(set(participants) - set(sites))
        extra = sorted(set(sites) - set(participants))
        if missing or extra:
            parts = ([f"no contribution from announced participant(s) {', '.join(missing)}"]
                     if missing else []) + (
                [f"contribution(s) from site(s) not announced: {', '.join(extra)}"]
                if extra else [])
            raise InternalError("the contributions do not match the participant set: "
                                + "; ".join(parts) + " (a dropped site means re-running the "
                                "query with a new participant set and a new query id)")
        if len(participants) < 2:
            raise InternalError("secure aggregation needs at least two participants")
        unknown = [s for s in participants if s not in self._signing_keys]
        if unknown:
            raise InternalError(f"no published signing key for site(s) {', '.join(unknown)} "
                                "(federation.yaml: sites.<name>.ed25519)")
        return participants

    def _check_layout(self, layout: SecureLayout) -> he.Profile:
        profile = he.PROFILES.get(layout.profile)
        if profile is None or layout.profile not in self._keys:
            raise InternalError(f"unknown encryption profile {layout.profile!r}")
        if layout.length <= 0:
            raise InternalError("the layout has no slots")
        if not isinstance(layout.bound, int) or not 0 < layout.bound <= profile.max_abs_total:
            raise InternalError(f"the layout's bound is outside the {profile.name} profile's "
                                "safe range: the range check would be meaningless")
        return profile

    @staticmethod
    def _cell_checks(layout: SecureLayout, requirements: Requirements) -> CellChecks | None:
        if layout.noise_sigma > 0:
            return None  # under noise the coordinator judges cells on the noisy counts
        if layout.checks is None:
            if requirements.needs_cell_checks:
                raise InternalError(
                    "the sites' requirements ask for cell checks (minimum cell count, "
                    "dominance or disclosive zeros), but the layout carries no check "
                    "columns: refusing to release unchecked cells")
            return None
        own = layout.checks
        both = strictest([requirements, Requirements(
            min_cell_count=own.min_cell_count, dominance=own.dominance,
            zero_cells_disclosive=own.zero_cells_disclosive)])
        return CellChecks(min_cell_count=both.min_cell_count, dominance=both.dominance,
                          zero_cells_disclosive=both.zero_cells_disclosive,
                          contributors=own.contributors, dominant=own.dominant)

    def _verify_and_decrypt(self, request: SecureReleaseRequest,
                            participants: tuple[str, ...], profile: he.Profile) -> list[int]:
        layout = request.layout
        keys = self._keys[profile.name]
        context = self._contexts[profile.name]
        fingerprint = keys.fingerprint()
        digest = slots.layout_digest(layout)
        expected = he.ciphertext_count(layout.length, profile)
        contributions = sorted(request.contributions, key=lambda c: c.site)
        # (d) provenance: the current public context, the signed facts
        for c in contributions:
            if not isinstance(c.context_fingerprint, str) or not hmac.compare_digest(
                    c.context_fingerprint.lower(), fingerprint):
                raise _Refused("context", f"site {c.site!r} encrypted under another public "
                               f"context than this epoch's {profile.name} context (was the "
                               "public context swapped?)")
            if len(c.ciphertexts) != expected:
                raise _Refused("shape", f"site {c.site!r} sent {len(c.ciphertexts)} "
                               f"ciphertexts, the layout needs {expected}")
            try:
                signed = signing.Contribution(
                    request.query_id, c.site, participants, c.context_fingerprint,
                    tuple(c.ciphertexts), digest, signing.requirements_json(c.requirements))
                signing.verify(self._signing_keys[c.site], signed, c.signature)
            except Error:
                raise _Refused("signature", f"the contribution of site {c.site!r} does not "
                               "carry a valid signature over this query, participant set, "
                               "public context, layout and requirements (altered, replayed "
                               "or forged)") from None
        # (e) the key holder's own sum, compared with the coordinator's
        try:
            own = he.add(context, (c.ciphertexts for c in contributions))
        except Error:
            raise _Refused("ciphertext", "a signed contribution is not a valid ciphertext of "
                           "this context, or the contributions differ in shape") from None
        summed = tuple(bytes(b) for b in request.summed)
        if summed != tuple(own):
            try:
                canonical = tuple(he.add(context, [summed])) if len(summed) == len(own) else ()
            except Error:
                canonical = ()
            if canonical != tuple(own):
                raise _Refused("sum", "the coordinator's sum is not the sum of the signed "
                               "contributions (a subset, a single contribution, or altered)")
        # (f) decrypt the key holder's own sum once, range-checked
        try:
            values = keys.decrypt(own, bound=layout.bound)
        except Error:
            raise _Refused("range", "the decrypted sum is out of range (it wrapped around, "
                           "or a contribution was masked for another participant set)") \
                from None
        if len(values) != layout.length:
            raise _Refused("shape", f"the sum has {len(values)} slots, the layout "
                           f"{layout.length}")
        return values
