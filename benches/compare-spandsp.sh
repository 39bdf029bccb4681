#!/usr/bin/env bash
# Throughput of `pound dtmf --bench` against the spandsp reference detector
# (../shared/ref), side by side on one machine: an hour of 8 kHz audio
# (the talk-off fixtures looped, a '#' every ten seconds), ROUNDS rounds, each
# running spandsp and then pound with every kernel this CPU has, medians
# compared. Prints one JSON line per kernel and the CPU it ran on.
#
#   bash benches/compare-spandsp.sh [ROUNDS] [PASSES]
#
# Needs: libspandsp-dev and pkg-config (apt-get install -y libspandsp-dev pkg-config).
# Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-7}
passes=${2:-10}
ref_src=${POUND_REF_SRC:-../shared/ref/spandsp_detect.c}
target=${CARGO_TARGET_DIR:-target}
work=$target/bench-dtmf
mkdir -p "$work"

cargo build --release --quiet --bin pound --example bench_audio
cc -O2 -Wall $(pkg-config --cflags spandsp 2>/dev/null) -o "$work/spandsp_detect" "$ref_src" \
    $(pkg-config --libs spandsp 2>/dev/null || echo -lspandsp) -lm
[ -f "$work/hour.wav" ] || "$target/release/examples/bench_audio" "$work/hour.wav" 60

# The kernels this CPU runs: asking for each in turn, an error means absent.
kernels=()
for kernel in portable avx2 avx512vnni; do
    POUND_DSP_KERNEL=$kernel "$target/release/pound" dtmf --bench 1 "$work/hour.wav" >/dev/null 2>&1 &&
        kernels+=("$kernel")
done

rate() { python3 -c 'import json,sys; print(json.load(sys.stdin)["samples_per_cpu_s"])'; }
results=$(mktemp)
for _ in $(seq "$rounds"); do
    echo "spandsp $("$work/spandsp_detect" --bench "$passes" "$work/hour.wav" | rate)" >>"$results"
    for kernel in "${kernels[@]}"; do
        echo "$kernel $(POUND_DSP_KERNEL=$kernel "$target/release/pound" dtmf --bench "$passes" "$work/hour.wav" | rate)" >>"$results"
    done
done
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
python3 - "$results" "$cpu" <<'PY'
import collections, json, statistics, sys
rates = collections.defaultdict(list)
for line in open(sys.argv[1]):
    name, rate = line.split()
    rates[name].append(float(rate))
ref = statistics.median(rates.pop("spandsp"))
for kernel, values in rates.items():
    p = statistics.median(values)
    print(json.dumps({"kernel": kernel, "pound_samples_per_cpu_s": round(p), "spandsp_samples_per_cpu_s": round(ref),
                      "ratio": round(p / ref, 2), "ratio_min": round(min(values) / ref, 2),
                      "ratio_max": round(max(values) / ref, 2), "rounds": len(values), "cpu": sys.argv[2]}))
PY
rm -f "$results"
