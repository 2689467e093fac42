#!/usr/bin/env bash
# Runs a command with DATABASE_URL pointing at a Postgres: $DATABASE_URL if set, else
# 127.0.0.1:5432 if it answers, else a throwaway cluster made with the local
# initdb/pg_ctl (as a non-root user where needed) and stopped afterwards. Fails with a
# clear message when none can be had: Postgres tests never skip.
set -euo pipefail

answers() {
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -d "$1" >/dev/null 2>&1
  else
    (exec 3<>/dev/tcp/127.0.0.1/5432) >/dev/null 2>&1
  fi
}

if [ -n "${DATABASE_URL:-}" ]; then
  exec "$@"
fi

if answers "postgres://postgres@127.0.0.1:5432/postgres"; then
  export DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres"
  exec "$@"
fi

bindir=""
for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && bindir="$d"; done
if [ -z "$bindir" ] && command -v initdb >/dev/null 2>&1; then bindir="$(dirname "$(command -v initdb)")"; fi
if [ -z "$bindir" ]; then
  echo "error: no Postgres: DATABASE_URL is unset, nothing answers on 127.0.0.1:5432, and initdb is not installed (apt-get install postgresql)" >&2
  exit 1
fi

tmp="$(mktemp -d)"
port=55432
run_as=()
if [ "$(id -u)" = "0" ]; then
  id postgres >/dev/null 2>&1 || { echo "error: running as root and no 'postgres' user to run a throwaway cluster" >&2; exit 1; }
  chown postgres "$tmp"
  run_as=(runuser -u postgres --)
fi
cleanup() { "${run_as[@]}" "$bindir/pg_ctl" -D "$tmp/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$tmp"; }
trap cleanup EXIT
"${run_as[@]}" "$bindir/initdb" -D "$tmp/data" -U postgres --auth=trust >/dev/null
"${run_as[@]}" "$bindir/pg_ctl" -D "$tmp/data" -o "-p $port -k $tmp -c listen_addresses=127.0.0.1" -l "$tmp/log" -w start >/dev/null
export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
"$@"
