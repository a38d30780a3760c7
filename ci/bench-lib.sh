# shellcheck shell=bash
# Sourced by ci/bench.d/*: where a benchmark's machine-readable results go
# (read by `ci/bench report`, ci/bench-report).
#   HEARTH_BENCH_OUT   the JSON file of a benchmark with one result file
#   HEARTH_BENCH_DIR   else results go to $HEARTH_BENCH_DIR/<name>-<stamp>.json
#                      (default $HEARTH_BUILD_DIR/bench, i.e. build/bench)
#   HEARTH_BENCH_STAMP the <stamp> (default: UTC date and time of the run)
# bench_out NAME prints the path for result NAME and creates its directory.
bench_out() {
	local dir=${HEARTH_BENCH_DIR:-${HEARTH_BUILD_DIR:-$root/build}/bench}
	HEARTH_BENCH_STAMP=${HEARTH_BENCH_STAMP:-$(date -u +%Y%m%dT%H%M%SZ)}
	export HEARTH_BENCH_STAMP
	mkdir -p "$dir"
	echo "$dir/$1-$HEARTH_BENCH_STAMP.json"
}

# bench_json_base BENCH LABEL ENGINE: a hearth-bench/1 result object (as
# tests/bench/bench_json.c makes them) with this machine's facts and no
# figures, for benchmarks whose numbers are taken from a program's output.
bench_json_base() {
	local kvm="no /dev/kvm" hw
	hw=$(grep -qw vmx /proc/cpuinfo && echo vmx || { grep -qw svm /proc/cpuinfo && echo svm || echo "no vmx/svm"; })
	if [ -e /dev/kvm ]; then
		if [ -d /sys/module/kvm_pvm ]; then kvm="PVM (kvm_pvm, $hw)"
		elif [ -d /sys/module/kvm_intel ]; then kvm="kvm_intel ($hw)"
		elif [ -d /sys/module/kvm_amd ]; then kvm="kvm_amd ($hw)"
		else kvm="KVM, unknown module ($hw)"; fi
	fi
	jq -n --arg bench "$1" --arg lbl "$2" --arg engine "$3" \
		--arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
		--arg cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')" \
		--argjson cores "$(nproc)" --arg kernel "$(uname -r)" --arg kvm "$kvm" \
		'{schema: "hearth-bench/1", bench: $bench, label: $lbl, date: $date,
		  machine: {cpu: $cpu, cores: $cores, kernel: $kernel, kvm: $kvm}, engine: $engine,
		  samples: {}, series: {}, figures: {}}'
}
