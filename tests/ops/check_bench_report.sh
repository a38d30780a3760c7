#!/bin/bash
# ops.bench_report: `ci/bench report` on the committed example results
# (docs/bench/*.json, real runs of ci/bench):
#   - the page has all six plots, each an inline SVG naming the machine, with
#     the engine in its table; nothing loaded from elsewhere (no scripts, no
#     src= or external href=);
#   - malformed input (not JSON, wrong schema, a non-numeric sample, an empty
#     file) is refused: non-zero exit, a message naming the file and the
#     reason, and no page written (an existing page is left untouched).
# Exit 0 pass, 1 fail, 77 skip (jq or gnuplot missing; the reason is printed).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
report=$root/ci/bench
examples=$root/docs/bench
need() { command -v "$1" >/dev/null || { echo "SKIP: $1 not installed ($2; ci/setup installs it)"; exit 77; }; }
fail() { echo "FAIL: $*" >&2; exit 1; }
need jq "Debian package jq"
need gnuplot "Debian package gnuplot-nox"
ls "$examples"/*.json >/dev/null 2>&1 || fail "no example results in $examples"

work=$(mktemp -d /tmp/check-bench-report.XXXXXX)
trap 'rm -rf "$work"' EXIT

# --- the example page
"$report" report -o "$work/report.html" "$examples" >"$work/out" 2>&1 ||
	fail "ci/bench report failed on $examples: $(cat "$work/out")"
page=$work/report.html
[ -s "$page" ] || fail "no page written"
grep -q '</html>' "$page" || fail "the page is cut short (no </html>)"
# plot id, where its curves come from (samples or series) and their kind.
for spec in plot-warm:samples:warm plot-boot:samples:boot plot-restore:samples:restore \
	plot-restores-concurrency:series:restores_vs_concurrency \
	plot-memory-clones:series:memory_vs_clones \
	plot-throughput-connections:series:throughput_vs_connections; do
	IFS=: read -r id what kind <<<"$spec"
	# The section from its heading to its end: one inline SVG, a curve for every
	# sample set or series of its kind in the inputs, the machine named.
	sec=$(sed -n "/<section id=\"$id\">/,/<\/section>/p" "$page")
	[ -n "$sec" ] || fail "no section $id"
	grep -q 'class="missing"' <<<"$sec" && fail "$id: reported as not measured"
	[ "$(grep -c '<svg' <<<"$sec")" = 1 ] || fail "$id: not exactly one inline SVG (plot missing)"
	grep -q '</svg>' <<<"$sec" || fail "$id: SVG not closed"
	want=$(jq -s --arg w "$what" --arg k "$kind" '[.[][$w][] | select(.kind == $k)] | length' "$examples"/*.json)
	[ "$want" -gt 0 ] || fail "$id: the examples in $examples have no $kind $what"
	got=$(grep -o 'id="gnuplot_plot_[0-9]*"' <<<"$sec" | sort -u | wc -l)
	[ "$got" = "$want" ] || fail "$id: $got curves drawn, $want $kind $what in the inputs"
	grep -q 'machine: ' <<<"$sec" || fail "$id: the plot does not name the machine"
	grep -q '<th>engine</th>' <<<"$sec" || fail "$id: no engine column"
	grep -q '<th>p50' <<<"$sec" || grep -q '<th>median' <<<"$sec" || fail "$id: no medians"
	echo "$id: inline SVG, $got curves"
done
[ "$(grep -c '<svg' "$page")" -eq 6 ] || fail "expected 6 SVG plots, found $(grep -c '<svg' "$page")"
grep -qi '<script' "$page" && fail "the page has a script"
grep -Eqi ' src=|href="(https?:)?//' "$page" && fail "the page loads something from elsewhere"
# Medians and ratios side by side.
grep -q 'p50 / fastest' "$page" || fail "no ratio column in the latency tables"
# Every example file is listed with its engine.
for f in "$examples"/*.json; do
	grep -qF "$(basename "$f")" "$page" || fail "$(basename "$f") not listed in the page"
done

# --- malformed input: refused, named, nothing written
good=$(ls "$examples"/*.json | head -1)
bad() { # NAME CONTENT EXPECTED-IN-MESSAGE
	local dir=$work/bad-$1
	mkdir -p "$dir"
	cp "$good" "$dir/"
	printf '%s' "$2" >"$dir/$1.json"
	echo "an older page" >"$dir/report.html"
	if "$report" report "$dir" >"$dir/out" 2>&1; then
		fail "$1: accepted (exit 0): $(cat "$dir/out")"
	fi
	grep -q "$1.json" "$dir/out" || fail "$1: the message does not name the file: $(cat "$dir/out")"
	grep -q "$3" "$dir/out" || fail "$1: the message does not say '$3': $(cat "$dir/out")"
	[ "$(cat "$dir/report.html")" = "an older page" ] || fail "$1: the existing page was overwritten"
	compgen -G "$dir/*tmp*" >/dev/null && fail "$1: a temporary page was left behind"
	echo "$1: refused: $(head -1 "$dir/out")"
}
bad syntax '{"schema": "hearth-bench/1", "bench": ' "not valid JSON"
bad empty '' "not valid JSON"
bad schema '{"schema": "other/2", "bench": "x"}' "not a hearth-bench/1 result"
bad array '[1, 2, 3]' "not a hearth-bench/1 result"
samp=$(jq -c '.samples = {"x": {"kind": "warm", "label": "x", "unit": "us", "values": [1, "two", 3]}}' "$good")
bad sample "$samp" 'sample set "x" is malformed'
ser=$(jq -c '.series = {"s": {"kind": "memory_vs_clones", "label": "s", "points": [[1]]}}' "$good")
bad series "$ser" 'series "s" is malformed'
nomachine=$(jq -c 'del(.machine)' "$good")
bad machine "$nomachine" "machine facts missing"
# A file that is not there.
if "$report" report -o "$work/x.html" "$work/nonexistent.json" >"$work/out" 2>&1; then
	fail "a missing input file was accepted"
fi
[ -e "$work/x.html" ] && fail "a page was written for a missing input"
echo "ops.bench_report: OK"
