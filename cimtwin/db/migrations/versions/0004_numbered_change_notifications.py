"""change notifications carry a number from change_seq

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24

A shared (Redis) tile cache outlives the API processes, so a change made while none of them
listened would leave stale tiles. Every change notification now takes a number from the
``change_seq`` sequence (through ``notify_change``); the cache remembers the last number it
applied and drops everything when a listener finds the database further on.
"""

from collections.abc import Sequence

from alembic import op

from cimtwin.settings import get_settings

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = get_settings().db_schema

_INCIDENT_BOX = """
    IF TG_OP = 'DELETE' THEN
        box := ST_Extent(OLD.geom);
    ELSIF TG_OP = 'INSERT' THEN
        box := ST_Extent(NEW.geom);
    ELSE
        box := ST_Extent(ST_Collect(OLD.geom, NEW.geom));
    END IF;"""


def upgrade() -> None:
    op.execute(f'CREATE SEQUENCE "{SCHEMA}".change_seq')
    op.execute(f"""
CREATE FUNCTION "{SCHEMA}".notify_change(change jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    seq bigint := nextval('"{SCHEMA}".change_seq');
BEGIN
    PERFORM pg_notify('cimtwin_change', (change || jsonb_build_object('seq', seq))::text);
    RETURN seq;
END $$;
""")
    op.execute(f"""
CREATE OR REPLACE FUNCTION "{SCHEMA}".notify_incident_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    box box2d;
BEGIN{_INCIDENT_BOX}
    PERFORM "{SCHEMA}".notify_change(jsonb_build_object(
        'kind', 'incident', 'op', TG_OP, 'tables', jsonb_build_array('incident'),
        'bbox', jsonb_build_array(ST_XMin(box), ST_YMin(box), ST_XMax(box), ST_YMax(box))
    ));
    RETURN NULL;
END $$;
""")


def downgrade() -> None:
    op.execute(f"""
CREATE OR REPLACE FUNCTION "{SCHEMA}".notify_incident_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    box box2d;
BEGIN{_INCIDENT_BOX}
    PERFORM pg_notify('cimtwin_change', json_build_object(
        'kind', 'incident', 'op', TG_OP, 'tables', json_build_array('incident'),
        'bbox', json_build_array(ST_XMin(box), ST_YMin(box), ST_XMax(box), ST_YMax(box))
    )::text);
    RETURN NULL;
END $$;
""")
    op.execute(f'DROP FUNCTION IF EXISTS "{SCHEMA}".notify_change(jsonb)')
    op.execute(f'DROP SEQUENCE IF EXISTS "{SCHEMA}".change_seq')
