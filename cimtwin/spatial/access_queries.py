"""API keys: made, hashed, looked up, listed and revoked (SQL next to :mod:`access`).

A key is ``cim_`` + 43 url-safe random characters (256 bits from :mod:`secrets`). Only its
SHA-256 is stored; the first 12 characters are kept as a prefix so admins can tell keys apart.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from cimtwin.spatial.access import ROLES
from cimtwin.spatial.sql_toolkit import T

KEY_PREFIX = "cim_"
PREFIX_CHARS = 12
#: viewer < editor < importer < admin: a role may do whatever a lower one may
ROLE_RANK: dict[str, int] = {role: rank for rank, role in enumerate(ROLES)}
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@:-]{0,99}")
#: keys longer than this are not ours (and not worth hashing)
MAX_KEY_CHARS = 200
#: last_used_at is written at most this often per key, so reads do not turn into writes
TOUCH_EVERY_S = 60

TABLE = T.api_key


@dataclass(frozen=True)
class KeyRecord:
    id: int
    name: str
    role: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_prefix(key: str) -> str:
    return key[:PREFIX_CHARS]


def role_allows(have: str, need: str) -> bool:
    """True when role ``have`` may do what ``need`` may."""
    return ROLE_RANK.get(have, -1) >= ROLE_RANK[need]


def check_role(role: str) -> str:
    if role not in ROLE_RANK:
        raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    return role


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise ValueError(
            f"key name {name!r}: 1-100 characters, letters, digits and _ . @ : - "
            "(starting with a letter or digit)"
        )
    return name


_COLUMNS = "id, name, role, prefix, created_at, last_used_at, revoked_at"


def _record(row: Any) -> KeyRecord:
    return KeyRecord(*row)


# --- command line (sync) --------------------------------------------------------------------


def create_key(conn: psycopg.Connection, name: str, role: str) -> tuple[str, KeyRecord]:
    """A new key for ``name`` with ``role``: returns the key (shown once) and its row."""
    check_name(name)
    check_role(role)
    exists = conn.execute(f"SELECT revoked_at FROM {TABLE} WHERE name = %s", (name,)).fetchone()
    if exists:
        state = "revoked" if exists[0] else "active"
        raise ValueError(
            f"a key named {name!r} already exists ({state}); names are never reused, choose another"
        )
    key = new_key()
    row = conn.execute(
        f"INSERT INTO {TABLE} (name, role, prefix, key_hash) VALUES (%s, %s, %s, %s) "
        f"RETURNING {_COLUMNS}",
        (name, role, key_prefix(key), key_hash(key)),
    ).fetchone()
    return key, _record(row)


def list_keys(conn: psycopg.Connection) -> list[KeyRecord]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM {TABLE} ORDER BY name").fetchall()
    return [_record(r) for r in rows]


def revoke_key(conn: psycopg.Connection, name: str) -> KeyRecord:
    row = conn.execute(
        f"UPDATE {TABLE} SET revoked_at = now() WHERE name = %s AND revoked_at IS NULL "
        f"RETURNING {_COLUMNS}",
        (name,),
    ).fetchone()
    if row:
        return _record(row)
    old = conn.execute(f"SELECT revoked_at FROM {TABLE} WHERE name = %s", (name,)).fetchone()
    if old is None:
        raise LookupError(f"no key named {name!r} (see `cimtwin keys list`)")
    raise LookupError(f"key {name!r} was already revoked at {old[0]:%Y-%m-%d %H:%M:%S %Z}")


# --- API (async) ----------------------------------------------------------------------------


async def lookup_key(conn: psycopg.AsyncConnection, key: str) -> KeyRecord | None:
    """The row of a presented key (revoked ones too), or None for an unknown key."""
    if not key or len(key) > MAX_KEY_CHARS:
        return None
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM {TABLE} WHERE key_hash = %s", (key_hash(key),)
    )
    row = await cur.fetchone()
    return _record(row) if row else None


async def touch_key(conn: psycopg.AsyncConnection, record: KeyRecord) -> None:
    """Record the use of a key (at most once a minute per key)."""
    await conn.execute(
        f"UPDATE {TABLE} SET last_used_at = now() WHERE id = %s AND (last_used_at IS NULL "
        f"OR last_used_at < now() - make_interval(secs => %s))",
        (record.id, TOUCH_EVERY_S),
    )
