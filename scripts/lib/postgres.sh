# Finds a PostgreSQL for the scripts, or starts a throwaway local cluster.
#
# After `xf_pg_ensure`, XF_PG_BASE is a URL prefix like postgres://postgres@127.0.0.1:5432 (no
# database name). Order: $XFCHAT_PG_BASE if set; a server already answering on 127.0.0.1:5432;
# otherwise a cluster of our own under .pg/ (or /tmp when run as root and the project folder is
# not reachable by the unprivileged user), started with the system's initdb and pg_ctl.

XF_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
XF_PG_PORT=${XFCHAT_PG_PORT:-55432}
XF_PG_STARTED=""

xf_pg_bindir() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$dir" ] || [ ! -x "$dir/initdb" ]; then
    echo "xfchat: no PostgreSQL server found on 127.0.0.1:5432 and no PostgreSQL binaries to start one." >&2
    echo "xfchat: install them with 'sudo apt-get install postgresql' (Debian/Ubuntu), or set DATABASE_URL." >&2
    return 1
  fi
  echo "$dir"
}

xf_port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Runs a command as the cluster's owner: ourselves, or an unprivileged user when we are root
# (PostgreSQL refuses to run as root).
xf_pg_as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u "$XF_PG_USER" -- "$@"
  else
    "$@"
  fi
}

xf_pg_ensure() {
  if [ -n "${XFCHAT_PG_BASE:-}" ]; then
    XF_PG_BASE=$XFCHAT_PG_BASE
    return 0
  fi
  if xf_port_open 5432; then
    XF_PG_BASE=postgres://postgres@127.0.0.1:5432
    return 0
  fi
  local bindir dir
  bindir=$(xf_pg_bindir) || return 1
  dir="$XF_ROOT/.pg"
  XF_PG_USER=$(id -un)
  if [ "$(id -u)" = 0 ]; then
    XF_PG_USER=postgres
    id postgres >/dev/null 2>&1 || XF_PG_USER=nobody
    mkdir -p "$dir" && chown "$XF_PG_USER" "$dir"
    if ! runuser -u "$XF_PG_USER" -- test -w "$dir"; then
      dir="/tmp/xfchat-pg-$(echo "$XF_ROOT" | cksum | cut -d' ' -f1)"
      mkdir -p "$dir" && chown "$XF_PG_USER" "$dir"
    fi
  fi
  mkdir -p "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    echo "xfchat: creating a throwaway PostgreSQL cluster in $dir" >&2
    xf_pg_as_owner "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; return 1; }
  fi
  if ! xf_port_open "$XF_PG_PORT"; then
    echo "xfchat: starting PostgreSQL on 127.0.0.1:$XF_PG_PORT" >&2
    xf_pg_as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
      -o "-p $XF_PG_PORT -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=on" start >/dev/null \
      || { tail -n 20 "$dir/server.log" >&2; return 1; }
    XF_PG_STARTED="$bindir/pg_ctl -D $dir/data"
  fi
  XF_PG_BASE=postgres://postgres@127.0.0.1:$XF_PG_PORT
}

# Stops the cluster if this script started it.
xf_pg_stop() {
  if [ -n "$XF_PG_STARTED" ]; then
    xf_pg_as_owner $XF_PG_STARTED -m fast stop >/dev/null 2>&1 || true
    XF_PG_STARTED=""
  fi
}

# Creates database $1 unless it exists.
xf_pg_createdb() {
  local psql
  psql=$(command -v psql || echo "$(xf_pg_bindir)/psql")
  if ! "$psql" "$XF_PG_BASE/postgres" -tAc "SELECT 1 FROM pg_database WHERE datname = '$1'" | grep -q 1; then
    "$psql" "$XF_PG_BASE/postgres" -qc "CREATE DATABASE \"$1\"" >/dev/null
  fi
}
