#!/usr/bin/env bash
# A small run of every hubbub-bench scenario against a fresh Hubbub, so the load generator keeps
# working. Asserts correctness only (connections made, nothing lost), never timings.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
HUBBUB_BIN="${HUBBUB_BIN:-target/debug/hubbub}"
BENCH_BIN="${BENCH_BIN:-target/debug/hubbub-bench}"

work="$(mktemp -d)"
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
"$HUBBUB_BIN" serve --data-dir "$work/data" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 >"$work/out" 2>"$work/err" &
server=$!
for _ in $(seq 1 200); do grep -q "Hubbub is ready." "$work/out" 2>/dev/null && break; sleep 0.05; done
grep -q "Hubbub is ready." "$work/out" || { echo "hubbub did not start"; cat "$work/err"; exit 1; }
admin=$(awk '/^admin listener:/ {print $3}' "$work/out")
cs=$("$HUBBUB_BIN" key show --admin-url "http://$admin" --data-dir "$work/data" | python3 -c 'import json,sys; print(json.load(sys.stdin)["primaryConnectionString"])')

passed=0
failed=0
check() { # name, json, python condition on d
  if python3 -c "import json,sys; d=json.loads(sys.argv[1]); sys.exit(0 if ($3) else 1)" "$2"; then
    passed=$((passed + 1)); echo "ok - $1"
  else
    failed=$((failed + 1)); echo "not ok - $1: $2"
  fi
}
bench() { "$BENCH_BIN" --json --connection-string "$cs" --server-pid "$server" "$@"; }

check "idle: 200 connections, memory read" "$(bench idle --connections 200)" 'd["connections"] == 200 and d["server_bytes_per_connection"] > 0'
check "connect storm: 200 connections" "$(bench connect-storm --connections 200 --concurrency 50)" 'd["connections"] == 200 and d["connections_per_second"] > 0'
check "broadcast: 100 subscribers, nothing lost" "$(bench broadcast --subscribers 100 --seconds 2 --publishers 4)" 'd["published"] > 0 and d["lost"] == 0 and d["delivered"] == d["published"] * 100 and d["publish_failures"] == 0'
check "many small groups: every member of each random group, nothing lost" "$(bench groups --connections 200 --groups 20 --seconds 1 --publishers 4)" 'd["scenario"] == "groups" and d["published"] > 0 and d["lost"] == 0 and d["expected_deliveries"] == d["published"] * 10'
check "json subprotocol, published from clients: nothing lost" "$(bench --protocol json broadcast --subscribers 50 --seconds 1 --publishers 2 --publish-from clients)" 'd["subprotocol"] == "json.webpubsub.azure.v1" and d["published_from"] == "clients" and d["published"] > 0 and d["lost"] == 0'
check "group stream of small fragments, json subscribers: nothing lost" "$(bench --protocol json broadcast --subscribers 50 --seconds 1 --publishers 2 --publish-from stream)" 'd["published_from"] == "stream" and d["published"] > 0 and d["lost"] == 0 and d["delivered"] == d["published"] * 50'
# More than 1,000 messages: without sequence acks the server would close the clients (its
# un-acknowledged buffer holds 1,000).
check "reliable subprotocol, acknowledged: nothing lost" "$(bench --protocol json-reliable broadcast --subscribers 50 --seconds 8 --publishers 4)" 'd["published"] > 1000 and d["lost"] == 0 and d["delivered"] == d["published"] * 50'
# MQTT 5 subscribers over WebSocket at QoS 1 (each PUBLISH answered with a PUBACK), REST publishing.
check "mqtt subscribers at QoS 1: nothing lost" "$(bench --protocol mqtt --mqtt-qos 1 broadcast --subscribers 50 --seconds 1 --publishers 2)" 'd["subprotocol"] == "mqtt" and d["mqtt_qos"] == 1 and d["published"] > 0 and d["lost"] == 0 and d["delivered"] == d["published"] * 50'
check "broadcast at a fixed rate: nothing lost" "$(bench broadcast --subscribers 50 --seconds 1 --rate 50)" 'd["published"] > 0 and d["lost"] == 0'

token=$(cat "$work/data/admin-token")
check "rotation under load: nothing dropped or lost" "$(HUBBUB_ADMIN_TOKEN="$token" bench rotation --connections 100 --seconds 3 --rate 20 --admin-url "http://$admin")" 'd["dropped_connections"] == 0 and d["lost"] == 0 and d["publish_errors"] == 0 and d["published"] > 0 and d["regenerations"]["primary"] >= 1'

echo "bench smoke: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
