#!/usr/bin/env bash
# Set up cimtwin on this machine; safe to run any number of times.
#   1. .venv/ with cimtwin and its test extras
#   2. Debian packages: PostGIS, pgRouting, GDAL tools, the map label fonts (DejaVu, and
#      WenQuanYi Micro Hei for Chinese), redis-server, proj-data (the EGM96 geoid for 3D Tiles
#      heights), openscenegraph (osgconv, for OSGB oblique photography) (when run as root;
#      else says what to install)
#   3. a PostgreSQL server: the one CIMTWIN_DATABASE_URL names, or a private cluster in .pgdata/
#   4. the database, its extensions (postgis, postgis_sfcgal, pgrouting) and the migrations
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CIMTWIN_DATABASE_URL="${CIMTWIN_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/cimtwin}"
PY="${PYTHON:-python3}"
APT_PACKAGES_FOR() { echo "postgresql-$1-postgis-3 postgresql-$1-pgrouting gdal-bin fonts-dejavu-core fonts-wqy-microhei"; }

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[setup] error:\033[0m %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }
apt_updated=""
apt_install() {
  is_root || die "missing Debian packages; run as root: apt-get install -y $*"
  if [ -z "$apt_updated" ]; then apt-get update -qq; apt_updated=1; fi
  say "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# --- 1. Python environment -------------------------------------------------------------
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "Python >= 3.11 needed (found $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11"
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PY" -m venv .venv || { apt_install python3-venv; "$PY" -m venv .venv; }
fi
stamp=.venv/.cimtwin-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! .venv/bin/python -c 'import cimtwin' 2>/dev/null; then
  say "installing cimtwin and its test extras into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[test]"
  echo "$want" > "$stamp"
else
  say ".venv is up to date"
fi
PYV=.venv/bin/python

# --- 2./3. PostgreSQL server --------------------------------------------------------------
read -r DB_HOST DB_PORT DB_USER DB_NAME < <($PYV - <<'PYEOF'
from cimtwin.db.engine import sqlalchemy_url
u = sqlalchemy_url()
print(u.host or "127.0.0.1", u.port or 5432, u.username or "postgres", u.database)
PYEOF
)
reachable() { $PYV -c 'import sys; from cimtwin.db.bootstrap import server_reachable; sys.exit(0 if server_reachable() else 1)'; }

pg_bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$d" ] && echo "$d"
}

if reachable; then
  say "PostgreSQL answers at $DB_HOST:$DB_PORT"
else
  case "$DB_HOST" in
    127.0.0.1|localhost|::1) ;;
    *) die "no PostgreSQL answers at $DB_HOST:$DB_PORT (CIMTWIN_DATABASE_URL); start it or fix the URL" ;;
  esac
  BIN="$(pg_bindir || true)"
  if [ -z "$BIN" ]; then
    apt_install postgresql
    BIN="$(pg_bindir)"
  fi
  PGDATA_DIR="$ROOT/.pgdata"
  if is_root && ! runuser -u postgres -- test -x "$ROOT"; then
    PGDATA_DIR=/var/lib/cimtwin/pgdata  # the postgres user cannot reach the project folder
  fi
  as_pg() { if is_root; then runuser -u postgres -- "$@"; else "$@"; fi; }
  if [ ! -f "$PGDATA_DIR/PG_VERSION" ]; then
    say "initialising a private PostgreSQL cluster in .pgdata/"
    mkdir -p "$PGDATA_DIR"
    is_root && chown postgres:postgres "$PGDATA_DIR"
    as_pg "$BIN/initdb" -D "$PGDATA_DIR" -U "$DB_USER" --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  fi
  say "starting the private cluster on $DB_HOST:$DB_PORT"
  mkdir -p "$PGDATA_DIR/run"; is_root && chown postgres:postgres "$PGDATA_DIR/run"
  as_pg "$BIN/pg_ctl" -D "$PGDATA_DIR" -l "$PGDATA_DIR/server.log" -w \
    -o "-p $DB_PORT -c listen_addresses=$DB_HOST -k $PGDATA_DIR/run" start >/dev/null \
    || die "the private cluster did not start; see $PGDATA_DIR/server.log"
  reachable || die "started a cluster but cannot connect to $DB_HOST:$DB_PORT"
fi

# PostGIS / pgRouting packages for the server's major version
SERVER_MAJOR=$($PYV - <<'PYEOF'
import psycopg
from cimtwin.db.engine import libpq_dsn, sqlalchemy_url
u = sqlalchemy_url()
with psycopg.connect(libpq_dsn(str(u.set(database="postgres")))) as c:
    print(c.info.server_version // 10000)
PYEOF
)
missing=$($PYV - <<'PYEOF'
import psycopg
from cimtwin.db.bootstrap import EXTENSIONS
from cimtwin.db.engine import libpq_dsn, sqlalchemy_url
u = sqlalchemy_url()
with psycopg.connect(libpq_dsn(str(u.set(database="postgres")))) as c:
    have = {r[0] for r in c.execute("SELECT name FROM pg_available_extensions")}
print(" ".join(e for e in EXTENSIONS if e not in have))
PYEOF
)
need_apt=""
[ -n "$missing" ] && need_apt=1
command -v ogr2ogr >/dev/null || need_apt=1
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need_apt=1  # map label glyphs
[ -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || need_apt=1  # Chinese map labels (CJK glyphs)
if [ -n "$need_apt" ]; then
  case "$DB_HOST" in
    127.0.0.1|localhost|::1) apt_install $(APT_PACKAGES_FOR "$SERVER_MAJOR") ;;
    *) [ -z "$missing" ] || die "the server at $DB_HOST lacks: $missing; install PostGIS/pgRouting there" ;;
  esac
fi

# --- map label fonts, also when the database is on another host (glyphs are made here) -----
if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] \
  || [ ! -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ]; then
  if is_root; then apt_install fonts-dejavu-core fonts-wqy-microhei
  else say "label fonts missing: map labels (Chinese names) will not render (apt-get install fonts-dejavu-core fonts-wqy-microhei)"; fi
fi

# --- Redis: the tests start a private redis-server for the shared tile cache -----------------
if ! command -v redis-server >/dev/null; then
  if is_root; then apt_install redis-server; else say "redis-server missing: the Redis tile cache tests will be skipped (apt-get install redis-server)"; fi
fi

# --- the geoid grid: 3D Tiles need ellipsoidal heights (1985 height + geoid; CIMTWIN_GEOID) -----
if [ "${CIMTWIN_GEOID:-egm96_15.gtx}" = egm96_15.gtx ] && [ ! -f /usr/share/proj/egm96_15.gtx ]; then
  if is_root; then apt_install proj-data; else die "the EGM96 geoid grid is missing: run as root: apt-get install -y proj-data (or set CIMTWIN_GEOID to a grid file, or none)"; fi
fi

# --- OpenSceneGraph's osgconv: reads ContextCapture OSGB oblique photography (import oblique) ---
if ! command -v osgconv >/dev/null; then
  if is_root; then apt_install openscenegraph
  else say "osgconv missing: oblique photography (OSGB) cannot be imported (run as root: apt-get install -y openscenegraph)"; fi
fi

# --- front-end packages (served locally, no CDN) and the browser the map tests drive -------
if ! command -v npm >/dev/null; then apt_install nodejs npm; fi
if [ ! -d viewer/node_modules/maplibre-gl ] || [ ! -d viewer/node_modules/cesium ] \
  || [ ! -d viewer/node_modules/swagger-ui-dist ] || [ ! -d viewer/node_modules/redoc ] \
  || [ viewer/package-lock.json -nt viewer/node_modules ]; then
  say "installing the viewer's npm packages"
  (cd viewer && npm ci --no-audit --no-fund --loglevel=error)
fi
if ! command -v chromium >/dev/null; then
  if is_root; then apt_install chromium; else say "chromium missing: the map rendering test will be skipped (apt-get install chromium)"; fi
fi

# --- 4. database, extensions, migrations ----------------------------------------------------
.venv/bin/cimtwin db setup
