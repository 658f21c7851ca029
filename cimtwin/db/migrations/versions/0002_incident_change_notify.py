"""incident edits announce their extent on cimtwin_change

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

Any insert, update or delete of an incident (API, SQL console, QGIS editing) notifies the API
processes, which drop exactly the cached tiles around the old and new positions.
"""

from collections.abc import Sequence

from alembic import op

from cimtwin.settings import get_settings

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = get_settings().db_schema


def upgrade() -> None:
    op.execute(f"""
CREATE FUNCTION "{SCHEMA}".notify_incident_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    box box2d;
BEGIN
    IF TG_OP = 'DELETE' THEN
        box := ST_Extent(OLD.geom);
    ELSIF TG_OP = 'INSERT' THEN
        box := ST_Extent(NEW.geom);
    ELSE
        box := ST_Extent(ST_Collect(OLD.geom, NEW.geom));
    END IF;
    PERFORM pg_notify('cimtwin_change', json_build_object(
        'kind', 'incident', 'op', TG_OP, 'tables', json_build_array('incident'),
        'bbox', json_build_array(ST_XMin(box), ST_YMin(box), ST_XMax(box), ST_YMax(box))
    )::text);
    RETURN NULL;
END $$;
""")
    op.execute(f"""
CREATE TRIGGER incident_change_notify AFTER INSERT OR UPDATE OR DELETE
ON "{SCHEMA}".incident FOR EACH ROW EXECUTE FUNCTION "{SCHEMA}".notify_incident_change();
""")


def downgrade() -> None:
    op.execute(f'DROP TRIGGER IF EXISTS incident_change_notify ON "{SCHEMA}".incident')
    op.execute(f'DROP FUNCTION IF EXISTS "{SCHEMA}".notify_incident_change()')
