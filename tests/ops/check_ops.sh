#!/bin/bash
# Checks of the Grafana dashboard and Prometheus rules in ops/ (label ops).
#   check_ops.sh rules      promtool check rules + promtool test rules
#   check_ops.sh dashboard  the dashboard JSON: structure checked with jq
#   check_ops.sh metrics    a real hearthd's /metrics passes `promtool check metrics`,
#                           and every metric the dashboard and the rules use is in it
# Exit 0 pass, 1 fail, 77 skip (a tool is missing; the reason is printed).
set -euo pipefail
ops=$(cd "$(dirname "$0")/../../ops" && pwd)
need() { command -v "$1" >/dev/null || { echo "SKIP: $1 not installed ($2; ci/setup installs it)"; exit 77; }; }
fail() { echo "FAIL: $*" >&2; exit 1; }
dash=$ops/grafana/hearth-dashboard.json
rules=$ops/prometheus/hearth-alerts.yml

case "${1:-}" in
rules)
  need promtool "Debian package prometheus"
  promtool check rules "$rules"
  (cd "$ops/prometheus" && promtool test rules hearth-alerts.test.yml)
  ;;
dashboard)
  need jq "Debian package jq"
  jq -e . "$dash" >/dev/null || fail "not JSON: $dash"
  jq -e '.uid == "hearth-overview" and (.title | length > 0) and (.schemaVersion | type == "number")' "$dash" >/dev/null ||
    fail "uid, title or schemaVersion missing"
  # Panel ids unique; every non-row panel has a Prometheus datasource, a gridPos
  # inside the 24-column grid and at least one target with a non-empty expr.
  jq -e '[.panels[].id] | length == (unique | length)' "$dash" >/dev/null || fail "duplicate panel ids"
  bad=$(jq -r '.panels[] | select(.type != "row") |
    select((.datasource.type != "prometheus") or (.gridPos.x + .gridPos.w > 24) or (.gridPos.h < 1) or
           ((.targets // []) | length == 0) or any(.targets[]; (.expr // "") == "")) | .title' "$dash")
  [ -z "$bad" ] || fail "panels without datasource, target or a valid gridPos: $bad"
  # Panels do not overlap.
  jq -e '[.panels[] | .gridPos as $g | range($g.x; $g.x + $g.w) as $x | range($g.y; $g.y + $g.h) as $y | "\($x),\($y)"]
         | length == (unique | length)' "$dash" >/dev/null || fail "panels overlap"
  for v in datasource job instance; do
    jq -e --arg v "$v" 'any(.templating.list[]; .name == $v)' "$dash" >/dev/null || fail "no \$$v variable"
  done
  for want in hearth_invocations_total hearth_errors_total hearth_throttles_by_reason_total \
      hearth_invocation_duration_seconds_bucket hearth_cold_start_boot_seconds_bucket \
      hearth_cold_starts_by_path_total hearth_vms hearth_vmm_pool_idle hearth_clone_failures_total \
      hearth_budget_max_used_ratio; do
    jq -e --arg m "$want" '[.panels[].targets[]?.expr] | any(contains($m))' "$dash" >/dev/null ||
      fail "the dashboard does not chart $want"
  done
  echo "dashboard: $(jq '[.panels[] | select(.type != "row")] | length' "$dash") panels OK"
  ;;
metrics)
  need promtool "Debian package prometheus"
  need jq "Debian package jq"
  need curl "Debian package curl"
  [ -x "${HEARTHD:-}" ] || fail "HEARTHD is not set to hearthd"
  dir=$(mktemp -d /tmp/hearth-ops.XXXXXX)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$HEARTHD" --config none --state-dir "$dir/state" --run-dir "$dir/run" --socket "$dir/api.sock" \
    --listen "127.0.0.1:$port" --engine process --allow-unisolated \
    ${HEARTH_TEST_AGENT:+--agent "$HEARTH_TEST_AGENT"} >"$dir/log" 2>&1 &
  pid=$!
  trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
    kill -0 $pid 2>/dev/null || fail "hearthd exited at start: $(tail -5 "$dir/log")"
    sleep 0.1
  done
  curl -sf "http://127.0.0.1:$port/metrics" >"$dir/metrics" || fail "no /metrics; log: $(tail -5 "$dir/log")"
  promtool check metrics <"$dir/metrics" || fail "promtool check metrics"
  names=$( (jq -r '.panels[].targets[]?.expr' "$dash"; cat "$rules") |
    grep -oE 'hearth_[a-z0-9_]+' | sed -E 's/_(bucket|sum|count)$//' | sort -u)
  for n in $names; do
    grep -qE "^$n(_bucket|_sum|_count)?(\{| )" "$dir/metrics" || fail "$n is used by ops/ but hearthd does not export it"
  done
  echo "metrics: $(echo "$names" | wc -l) metric names used by ops/ are exported; promtool check metrics OK"
  ;;
*)
  echo "usage: $0 rules|dashboard|metrics" >&2
  exit 2
  ;;
esac
