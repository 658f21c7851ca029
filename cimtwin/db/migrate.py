"""Alembic driven from code: the migrations ship inside the package, no alembic.ini needed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from cimtwin.db.engine import sqlalchemy_url
from cimtwin.errors import UserError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option(
        "sqlalchemy.url",
        sqlalchemy_url(url).render_as_string(hide_password=False).replace("%", "%%"),
    )
    return cfg


_ASSIGNMENT = re.compile(r'^(down_revision|revision)\b[^=]*=\s*(?:"([^"]*)"|None)', re.M)


def revisions() -> list[str]:
    """Revision ids, oldest first, read from the version files' text: loading them through
    Alembic imports the whole data model, seconds for a `db status`."""
    down_of = {}
    for path in (MIGRATIONS / "versions").glob("*.py"):
        found = dict((k, v or None) for k, v in _ASSIGNMENT.findall(path.read_text("utf-8")))
        if "revision" in found:
            down_of[found["revision"]] = found.get("down_revision")
    order, current = [], None
    children = {d: r for r, d in down_of.items()}
    while current in children:
        current = children[current]
        order.append(current)
    return order


def heads() -> list[str]:
    """The newest revision (migrations here form one line)."""
    return revisions()[-1:]


def _run(step, url: str | None, revision: str) -> None:
    """An Alembic command; an unknown or ambiguous revision is the user's to fix."""
    from alembic.util import CommandError

    try:
        step(alembic_config(url), revision)
    except CommandError as exc:
        known = ", ".join(["base", *revisions(), "head"])
        raise UserError(
            f"migration revision {revision!r}: {exc}; known revisions: {known}"
        ) from None


def upgrade(url: str | None = None, revision: str = "head") -> None:
    from alembic import command

    _run(command.upgrade, url, revision)


def downgrade(url: str | None = None, revision: str = "base") -> None:
    from alembic import command

    _run(command.downgrade, url, revision)


def current(url: str | None = None) -> None:
    from alembic import command

    command.current(alembic_config(url), verbose=False)
