#!/usr/bin/env bash
# Quick A/B of orgwarden's CPU per JSON request, for comparing builds or settings (bench/RESULTS.md,
# ninth pass). Starts a stand-alone simulator and one `orgwarden serve` worker forwarding to it, makes
# an API key, warms up for 2 s, then loads `POST /v1/messages` with wrk (2 threads, 32 connections,
# 8 s) and prints req/s and the serve process's CPU time per request. Not a replacement for
# bench/gateway.py (no nginx alongside, one run): use it to compare two things run back to back.
#
#   bench/ab.sh                                   # this tree, default settings
#   bench/ab.sh ORGWARDEN_ACCESS_LOG=false        # extra environment for the server
#   TREE=/path/to/other/checkout bench/ab.sh      # another checkout's .venv
#   PYP=/path/to/src bench/ab.sh                  # this .venv, another source tree (PYTHONPATH)
#   MODE=user bench/ab.sh                         # a user access token (ow-at01-) instead of an API key
set -euo pipefail
cd "${TREE:-$(dirname "$0")/..}"
D=$(mktemp -d)
trap 'kill $SRV $SIM 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$D"' EXIT
SIM_PORT=${SIM_PORT:-18090}
PORT=${PORT:-18080}
.venv/bin/orgwarden simulator --port "$SIM_PORT" > "$D/sim.log" 2>&1 &
SIM=$!
SRV=$SIM
sleep 1.5
env PYTHONPATH="${PYP:-}" ORGWARDEN_DATA_DIR="$D" ORGWARDEN_UPSTREAM="http://127.0.0.1:$SIM_PORT" \
  ORGWARDEN_UPSTREAM_API_KEY=sk-ant-api03-ab "$@" .venv/bin/orgwarden serve --port "$PORT" > "$D/serve.log" 2>&1 &
SRV=$!
for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$PORT/health" && break; sleep 0.2; done
ADMIN=$(grep -o 'sk-ant-admin01-[A-Za-z0-9_-]*' "$D/serve.log" | head -1)
if [ "${MODE:-key}" = user ]; then  # the first admin's token in the default workspace (bench/user_token.py)
  KEY=$(env PYTHONPATH="${PYP:-}" ORGWARDEN_DATA_DIR="$D" .venv/bin/python bench/user_token.py)
else
  KEY=$(curl -s -X POST "http://127.0.0.1:$PORT/v1/organizations/api_keys" -H "x-api-key: $ADMIN" \
    -H 'content-type: application/json' -d '{"name":"ab","workspace_id":null}' |
    python3 -c 'import sys, json; print(json.load(sys.stdin)["key"])')
fi
cat > "$D/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"model":"claude-sonnet-4-6","max_tokens":16,"messages":[{"role":"user","content":"hello"}]}'
wrk.headers["content-type"] = "application/json"
wrk.headers["x-api-key"] = "$KEY"
wrk.headers["anthropic-version"] = "2023-06-01"
LUA
URL="http://127.0.0.1:$PORT/v1/messages"
wrk -t2 -c32 -d2s -s "$D/post.lua" "$URL" > /dev/null
T0=$(awk '{print $14 + $15}' "/proc/$SRV/stat")
OUT=$(wrk -t2 -c32 -d8s -s "$D/post.lua" "$URL")
T1=$(awk '{print $14 + $15}' "/proc/$SRV/stat")
RPS=$(echo "$OUT" | awk '/Requests\/sec/ {print $2}')
REQ=$(echo "$OUT" | awk '/requests in/ {print $1}')
TICKS=$(getconf CLK_TCK)
echo "${MODE:-key} ${*:-defaults}: req/s=$RPS cpu_us_per_req=$(python3 -c "print(round(($T1 - $T0) * 1e6 / $TICKS / $REQ))")"
