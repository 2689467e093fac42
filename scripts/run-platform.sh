#!/usr/bin/env bash
# `make run-platform`: a Postgres-mode PDP and the admin server on a local Postgres
# (DATABASE_URL, as scripts/with-postgres.sh finds one), with a demo tenant from the
# family app (seed 004): the tenant `family`, its circles as groups (household,
# grandparents), and the roles OWNER > ADMIN > EDITOR > VISITOR, each inheriting the one
# after it, granting the app's permissions. It prints the two lines the README's platform
# tour starts from, then serves until Ctrl-C (which stops both servers).
#
# Settings (environment): PLATFORM_DB (database, default arbiter_platform; made when
# missing), DATA_DIR (the replica's snapshot, default ./arbiter-platform-data),
# GRPC_ADDR/HTTP_ADDR/ADMIN_ADDR (defaults 127.0.0.1:50051/8080/8081; port 0 picks one).
# The operator key is kept in $DATA_DIR/operator.key (a development demo: delete the
# directory and drop the database to start over).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET="${CARGO_TARGET_DIR:-$HOME/.cache/arbiter-target}"
ARBITER="${ARBITER:-$TARGET/debug/arbiter}"
BASE_URL="${DATABASE_URL:?run through scripts/with-postgres.sh}"
DB="${PLATFORM_DB:-arbiter_platform}"
DB_URL="${BASE_URL%/*}/$DB"
DATA_DIR="${DATA_DIR:-./arbiter-platform-data}"
GRPC_ADDR="${GRPC_ADDR:-127.0.0.1:50051}"
HTTP_ADDR="${HTTP_ADDR:-127.0.0.1:8080}"
ADMIN_ADDR="${ADMIN_ADDR:-127.0.0.1:8081}"

mkdir -p "$DATA_DIR"
logs="$DATA_DIR/logs"
mkdir -p "$logs"
pids=()
stop() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop EXIT
trap 'exit 0' INT TERM

if ! psql -qtAX "$BASE_URL" -c "SELECT 1 FROM pg_database WHERE datname = '$DB'" | grep -q 1; then
  psql -q "$BASE_URL" -c "CREATE DATABASE $DB" >/dev/null
fi

# Waits for a background process's first stdout line and prints it.
first_line() {
  local file="$1" i
  for i in $(seq 1 1200); do
    if [ -s "$file" ]; then head -n1 "$file"; return 0; fi
    sleep 0.1
  done
  echo "error: no ready line in $file; see $logs" >&2
  return 1
}

: >"$logs/pdp.out"
"$ARBITER" serve --postgres "$DB_URL" --migrate --data-dir "$DATA_DIR/pdp" \
  --grpc-addr "$GRPC_ADDR" --http-addr "$HTTP_ADDR" >"$logs/pdp.out" 2>"$logs/pdp.err" &
pids+=($!)
ready="$(first_line "$logs/pdp.out")"
grpc="$(sed -n 's/.* grpc=\([^ ]*\).*/\1/p' <<<"$ready")"
http="$(sed -n 's/.* http=\([^ ]*\).*/\1/p' <<<"$ready")"

fresh=0
if [ ! -s "$DATA_DIR/operator.key" ]; then
  "$ARBITER" admin bootstrap --postgres "$DB_URL" --tenant family --email parent@family.test \
    2>>"$logs/bootstrap.err" | sed -n 's/^api_key=//p' >"$DATA_DIR/operator.key"
  fresh=1
fi
KEY="$(cat "$DATA_DIR/operator.key")"

: >"$logs/admin.out"
"$ARBITER" admin --postgres "$DB_URL" --addr "$ADMIN_ADDR" --pdp-endpoint "http://$grpc" \
  >"$logs/admin.out" 2>"$logs/admin.err" &
pids+=($!)
admin="$(first_line "$logs/admin.out" | sed -n 's/.*addr=//p')"
ADMIN="http://$admin"

call() { # METHOD PATH [BODY]: the admin's answer (fails on a status over 299)
  curl -sS --fail-with-body -X "$1" "$ADMIN$2" -H "authorization: Bearer $KEY" \
    -H 'content-type: application/json' ${3:+-d "$3"}
}
TENANT="$(call GET '/v1/tenants?slug=family' | jq -r '.items[0].id')"

if [ "$fresh" = 1 ]; then
  # The family app's permissions (seed 004's permission_policies: resource, action).
  declare -A perm
  for p in circle:dissolve circle:manage_members accounts:read accounts:write transactions:create \
           transactions:void notes:read notes:write tasks:read tasks:write trips:read trips:write; do
    perm[$p]="$(call POST /v1/permissions "{\"name\": \"$p\", \"resource\": \"${p%%:*}\", \"action\": \"${p#*:}\", \"tags\": [\"family\"]}" | jq -r .id)"
  done
  # The roles, most powerful first; each inherits the permissions of the next.
  role() { # NAME PARENT-ID PERMISSION...
    local name="$1" parent="$2"; shift 2
    local body="{\"name\": \"$name\"${parent:+, \"parent_role_id\": \"$parent\"}}"
    local id; id="$(call POST "/v1/tenants/$TENANT/roles" "$body" | jq -r .id)"
    for p in "$@"; do call PUT "/v1/tenants/$TENANT/roles/$id/permissions/${perm[$p]}" >/dev/null; done
    echo "$id"
  }
  visitor="$(role VISITOR '' accounts:read notes:read tasks:read trips:read)"
  editor="$(role EDITOR '' notes:write tasks:write trips:write)"
  admin_role="$(role ADMIN '' accounts:write transactions:create transactions:void circle:manage_members)"
  owner="$(role OWNER '' circle:dissolve)"
  # Parents after the fact, so each role is created once: OWNER > ADMIN > EDITOR > VISITOR.
  call PATCH "/v1/tenants/$TENANT/roles/$editor" "{\"parent_role_id\": \"$visitor\"}" >/dev/null
  call PATCH "/v1/tenants/$TENANT/roles/$admin_role" "{\"parent_role_id\": \"$editor\"}" >/dev/null
  call PATCH "/v1/tenants/$TENANT/roles/$owner" "{\"parent_role_id\": \"$admin_role\"}" >/dev/null
  # The circles: the household edits, the grandparents visit; the parent owns it all.
  household="$(call POST "/v1/tenants/$TENANT/groups" '{"name": "household", "description": "the circle at home"}' | jq -r .id)"
  grandparents="$(call POST "/v1/tenants/$TENANT/groups" '{"name": "grandparents"}' | jq -r .id)"
  call POST "/v1/tenants/$TENANT/assignments" "{\"role_id\": \"$editor\", \"group_id\": \"$household\"}" >/dev/null
  call POST "/v1/tenants/$TENANT/assignments" "{\"role_id\": \"$visitor\", \"group_id\": \"$grandparents\"}" >/dev/null
  parent="$(call GET "/v1/tenants/$TENANT/users?email=parent@family.test" | jq -r '.items[0].id')"
  call POST "/v1/tenants/$TENANT/assignments" "{\"role_id\": \"$owner\", \"user_id\": \"$parent\"}" >/dev/null
  call POST "/v1/tenants/$TENANT/groups/$household/members" "{\"user_id\": \"$parent\", \"role\": \"owner\"}" >/dev/null
fi

echo "== the platform is up: the PDP on $grpc (gRPC) and $http (HTTP), the admin on $ADMIN (logs in $logs)"
echo "== in another terminal, for the README's platform tour:"
echo "export ARBITER_ENDPOINT=http://$grpc ADMIN=$ADMIN TENANT=$TENANT"
echo "export KEY=$KEY"
# Serve until Ctrl-C or either server stops.
wait -n "${pids[@]}"
