#!/usr/bin/env bash
# Throughput of `pound dtmf --bench` against the spandsp reference detector
# (../shared/ref), side by side on one machine: an hour of 8 kHz audio
# (the talk-off fixtures looped, a '#' every ten seconds), ROUNDS alternating
# runs of each, medians compared. Prints one JSON line.
#
#   bash benches/compare-spandsp.sh [ROUNDS] [PASSES]
#
# Needs: libspandsp-dev and pkg-config (apt-get install -y libspandsp-dev pkg-config).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-7}
passes=${2:-10}
ref_src=${POUND_REF_SRC:-../shared/ref/spandsp_detect.c}
work=target/bench-dtmf
mkdir -p "$work"

cargo build --release --quiet --bin pound --example bench_audio
cc -O2 -Wall $(pkg-config --cflags spandsp 2>/dev/null) -o "$work/spandsp_detect" "$ref_src" \
    $(pkg-config --libs spandsp 2>/dev/null || echo -lspandsp) -lm
[ -f "$work/hour.wav" ] || target/release/examples/bench_audio "$work/hour.wav" 60

rate() { python3 -c 'import json,sys; print(json.load(sys.stdin)["samples_per_cpu_s"])'; }
pound_rates=()
ref_rates=()
for _ in $(seq "$rounds"); do
    pound_rates+=("$(target/release/pound dtmf --bench "$passes" "$work/hour.wav" | rate)")
    ref_rates+=("$("$work/spandsp_detect" --bench "$passes" "$work/hour.wav" | rate)")
done
python3 - "${pound_rates[*]}" "${ref_rates[*]}" "$(target/release/pound dtmf --bench 1 "$work/hour.wav")" <<'PY'
import json, statistics, sys
pound = [float(x) for x in sys.argv[1].split()]
ref = [float(x) for x in sys.argv[2].split()]
kernel = json.loads(sys.argv[3])["kernel"]
p, r = statistics.median(pound), statistics.median(ref)
print(json.dumps({"pound_samples_per_cpu_s": round(p), "spandsp_samples_per_cpu_s": round(r),
                  "ratio": round(p / r, 2), "rounds": len(pound), "kernel": kernel}))
PY
