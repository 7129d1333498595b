#!/usr/bin/env bash
# README command 1: run Tether locally. Installs what it needs (tests/setup.sh), builds the
# Worker and the `tether` daemon, applies the D1 migrations, starts the Worker in workerd
# (`wrangler dev --local`) on 127.0.0.1 with state persisted in .tether/dev-state, and on the
# first run creates the first org, prints its owner's API key (once) and pairs this machine.
# Then it runs the paired daemon (`tether up`) next to the Worker. Later runs reuse the state.
# Ctrl-C stops both.
#
#   bash edge/dev.sh                                   # port 8787, state in .tether/dev-state
#   PORT=9000 TETHER_STATE_DIR=/tmp/tether bash edge/dev.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
source tests/setup.sh
bash edge/build.sh
echo "==> building the tether daemon (cargo build -p tether)"
cargo build -p tether --locked --quiet
tether="$root/target/debug/tether"

PORT="${PORT:-8787}"
state="${TETHER_STATE_DIR:-$root/.tether/dev-state}"
mkdir -p "$state"
url="http://127.0.0.1:$PORT"

# Local secrets, generated once next to the state, never committed (.tether/ is git-ignored).
secrets="$state/secrets.env"
if [ ! -f "$secrets" ]; then
  echo "==> generating local secrets in $secrets"
  (umask 077 && printf 'JWT_SECRET=%s\nBOOTSTRAP_TOKEN=%s\n' "$(head -c 32 /dev/urandom | base64 -w0)" \
    "$(head -c 24 /dev/urandom | base64 -w0 | tr '+/' '-_')" > "$secrets")
fi
bootstrap_token=$(sed -n 's/^BOOTSTRAP_TOKEN=//p' "$secrets")

echo "==> applying D1 migrations (local)"
CI=1 wrangler d1 migrations apply tether --local --persist-to "$state" >/dev/null

echo "==> starting the Worker in workerd on $url"
CI=1 wrangler dev --local --ip 127.0.0.1 --port "$PORT" --persist-to "$state" --env-file "$secrets" \
  --show-interactive-dev-session=false --log-level warn &
wrangler_pid=$!
daemon_pid=""
stop_all() {
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
  kill "$wrangler_pid" 2>/dev/null || true
  wait "$wrangler_pid" 2>/dev/null || true
}
trap stop_all EXIT INT TERM

# The local daemon's own folders, inside the dev state.
export TETHER_CONFIG_DIR="$state/daemon/config" TETHER_STATE_DIR="$state/daemon/state"

for _ in $(seq 1 120); do
  curl -fsS "$url/health" >/dev/null 2>&1 && break
  kill -0 "$wrangler_pid" 2>/dev/null || { echo "wrangler dev exited; see its output above" >&2; exit 1; }
  sleep 0.5
done
curl -fsS "$url/health" >/dev/null || { echo "the Worker did not come up on $url" >&2; exit 1; }

# The body, then the status code on a line of its own.
reply=$(curl -sS -w '\n%{http_code}' -X POST "$url/v1/bootstrap" \
  -H "authorization: Bearer $bootstrap_token" -H 'content-type: application/json' \
  -d "{\"org_name\": \"${TETHER_ORG:-My Org}\", \"email\": \"${TETHER_EMAIL:-you@localhost.dev}\", \"name\": \"${TETHER_NAME:-Owner}\"}")
answer=${reply##*$'\n'}
body=${reply%$'\n'*}
case "$answer" in
  201)
    key=$(node -e 'process.stdout.write(JSON.parse(process.argv[1]).api_key.secret)' "$body")
    org=$(node -e 'process.stdout.write(JSON.parse(process.argv[1]).org.name)' "$body")
    echo "==> pairing this machine with the org (tether pair, approved with the owner's key)"
    "$tether" login --server "$url" --key "$key" >/dev/null
    "$tether" pair --server "$url" > "$state/pair.log" 2>&1 &
    pair_pid=$!
    code=""
    for _ in $(seq 1 100); do
      code=$(grep -o '[A-Z0-9]\{4\}-[A-Z0-9]\{4\}' "$state/pair.log" | head -1 || true)
      [ -n "$code" ] && break
      sleep 0.1
    done
    [ -n "$code" ] || { cat "$state/pair.log" >&2; exit 1; }
    "$tether" hosts approve "$code" >/dev/null
    wait "$pair_pid" || { cat "$state/pair.log" >&2; exit 1; }
    cat <<MSG

  Tether is running at $url (state: $state).
  Created org "$org" and its owner. The owner's API key, shown this once:

      $key

  This machine is paired as a host; its daemon runs alongside (logs: $state/daemon.log).

  Next:
    export TETHER_URL=$url TETHER_KEY=$key
    export TETHER_CONFIG_DIR=$TETHER_CONFIG_DIR TETHER_STATE_DIR=$TETHER_STATE_DIR
    $tether hosts list
    curl -s -H "x-api-key: \$TETHER_KEY" \$TETHER_URL/v1/me
    curl -s -H "x-api-key: \$TETHER_KEY" -H 'content-type: application/json' \\
         -d '{"title": "My first task"}' \$TETHER_URL/v1/tasks

  Run an agent here (any git checkout; an agent CLI such as claude on the daemon's PATH):
    $tether projects link ~/code/app --project app --create
    curl -s -H "x-api-key: \$TETHER_KEY" -H 'content-type: application/json' \\
         -d '{"project": "app", "agent": "claude", "prompt": "Fix the build"}' \$TETHER_URL/v1/sessions
    $tether attach ses_...        # Ctrl-] detaches
    API reference: $url/v1/openapi.json

MSG
    ;;
  409)
    cat <<MSG

  Tether is running at $url, reusing the state in $state.
  The owner key was printed on the first run; to start over, stop this and delete $state.
  The daemon paired on the first run starts again (logs: $state/daemon.log).
  API reference: $url/v1/openapi.json

MSG
    ;;
  *)
    echo "bootstrap answered $answer: $body" >&2
    exit 1
    ;;
esac
echo "==> starting the paired daemon (tether up)"
RUST_LOG="${RUST_LOG:-info}" "$tether" up >> "$state/daemon.log" 2>&1 &
daemon_pid=$!
echo "  Ctrl-C stops the Worker and the daemon."
wait "$wrangler_pid"
