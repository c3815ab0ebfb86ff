#!/usr/bin/env bash
# Index scale benchmark (issue: index files at 100,000 packages): what a
# run of the built-in indexer costs in subdirs of 1,000, 10,000 and
# 100,000 packages, end to end through TLS and in process; the first run
# of a new process over 100,000 (rebuilt from the cache); the zstd levels;
# and the real daemon's start-up time and peak RSS holding that subdir.
#
# The channels are built once per machine by pkgtest.ScaleChannel (in
# the system's temp dir) and reused. N=1000 makes a smoke run.
# Usage: test/bench/index-scale.sh [N]   (default 100000; run as root)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=test/bench/lib.sh
. test/bench/lib.sh
N=${1:-100000}
count=15
[[ $N == 100000 ]] || count=3

echo "== index runs (p50-ms is the median; sizes in bytes)"
if [[ $N == 100000 ]]; then
	go test -run '^$' -bench 'BenchmarkUploadIndexed' -benchtime "${count}x" -timeout 60m ./internal/server/ | grep -E '^Benchmark'
	go test -run '^$' -bench 'BenchmarkAddOne' -benchtime "${count}x" -timeout 60m ./internal/repodata/ | grep -E '^Benchmark'
	go test -run '^$' -bench 'BenchmarkStartRebuild|BenchmarkZstdLevel' -benchtime 3x -timeout 60m ./internal/repodata/ | grep -E '^Benchmark'
else
	go test -run '^$' -bench "BenchmarkUploadIndexed/$N\$" -benchtime "${count}x" ./internal/server/ | grep -E '^Benchmark'
fi

echo "== the daemon over a subdir of $N packages"
W=$(mktemp -d /var/tmp/conda-upload-index-scale.XXXXXX)
PID=
cleanup() {
	[[ -z $PID ]] || { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
	rm -rf "$W"
}
trap cleanup EXIT
ROOT=${TMPDIR:-/tmp}/conda-upload-server-bench/n$N-v1
[[ -f $ROOT/.built ]] || { echo "no channel at $ROOT: the Go benchmarks above build it" >&2; exit 1; }
CGO_ENABLED=0 go build -o "$W/server" ./cmd/conda-upload-server
go run ./test/mkpkg -o "$W/scale-probe-1.0-0.conda" -subdir linux-64
PORT=$(free_port)
start=$(date +%s.%N)
"$W/server" --dev --listen 127.0.0.1 -p "$PORT" -d "$ROOT" >"$W/out" 2>"$W/log" &
PID=$!
until curl -sfk "https://127.0.0.1:$PORT/readyz" >/dev/null; do
	kill -0 "$PID" || { cat "$W/log" >&2; exit 1; }
	sleep 0.05
done
ready=$(date +%s.%N)
TOKEN=$(awk '/token:/{print $2; exit}' "$W/out")
res=$(curl -sk -F "token=$TOKEN" -F "artifact=@$W/scale-probe-1.0-0.conda" "https://127.0.0.1:$PORT/")
rm -f "$ROOT/linux-64/scale-probe-1.0-0.conda"
grep -q '"indexed":true' <<<"$res" || { echo "upload not indexed: $res" >&2; exit 1; }
awk -v s="$start" -v r="$ready" 'BEGIN { printf "start-up to ready (index rebuilt from its cache): %.2f s\n", r - s }'
awk '/^VmHWM|^VmRSS/{printf "%s %.1f MiB\n", $1, $2/1024}' "/proc/$PID/status"
