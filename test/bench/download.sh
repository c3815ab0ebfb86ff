#!/usr/bin/env bash
# Download benchmark (issue: serve the channel): conda-upload-server
# serving its channel against nginx serving the same directory over TLS,
# driven by one client (test/bench/dlgen, HTTP/1.1 for both) in
# alternating runs. Ratios are computed run by run; the table shows
# medians. Also: the server's peak RSS during 8 concurrent 1 GiB
# downloads, and upload goodput with and without 8 downloads running.
#
# Usage: test/bench/download.sh           3 runs (about 6 minutes)
#        QUICK=1 test/bench/download.sh   smoke run: small sizes, 1 run
# Run as root (the server drops to nobody; nginx is installed if missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=test/bench/lib.sh
. test/bench/lib.sh
bench_init conda-download-bench

if [[ -n ${QUICK:-} ]]; then
	RUNS=1 BIG=20MiB HUGE=64MiB N_BIG=2 N_SMALL=20 N_304=50 SCALE=1000
else
	RUNS=3 BIG=100MiB HUGE=1GiB N_BIG=5 N_SMALL=200 N_304=500 SCALE=10000
fi
# Any of these may be set in the environment instead, e.g. BIG=100MiB.
RUNS=${BENCH_RUNS:-$RUNS} BIG=${BENCH_BIG:-$BIG} HUGE=${BENCH_HUGE:-$HUGE} N_BIG=${BENCH_N_BIG:-$N_BIG}

echo "building" >&2
CGO_ENABLED=0 go build -o "$W/server" ./cmd/conda-upload-server
go build -o "$W/dlgen" ./test/bench/dlgen
go build -o "$W/loadgen" ./test/bench/loadgen
bench_cert

# One channel for both servers: three packages to download, and a
# linux-64 of $SCALE packages for repodata.json revalidation.
CH=$W/channel
mkdir -p "$CH/noarch"
go run ./test/mkpkg -o "$CH/noarch/mid-1.0-0.conda" -size 1MiB >/dev/null
go run ./test/mkpkg -o "$CH/noarch/big-1.0-0.conda" -size "$BIG" >/dev/null
go run ./test/mkpkg -o "$CH/noarch/huge-1.0-0.conda" -size "$HUGE" >/dev/null
cp -a "$(go run ./test/mkpkg -scale "$SCALE")/linux-64" "$CH/"
chown -R 65534:65534 "$CH"

TOKEN=bench-$RANDOM$RANDOM
P_OURS=$(free_port)
cat >"$W/config.toml" <<CONFIG
user = "nobody"
write_dir = "$CH"
listen = "127.0.0.1:$P_OURS"
certfile = "$W/cert.pem"
keyfile = "$W/key.pem"
token_hash = "$(printf '%s' "$TOKEN" | "$W/server" hash-token)"
max_upload_size = "2GiB"
[download]
enabled = true
access = "public"
[sandbox]
landlock = "enforce"
CONFIG
"$W/server" --config "$W/config.toml" 2>"$W/server.log" &
PIDS+=($!)
OURS_PID=$!

P_NGINX=$(free_port)
mkdir -p "$W/nginx"
cat >"$W/nginx/nginx.conf" <<NGINX
worker_processes auto;
pid $W/nginx/nginx.pid;
error_log $W/nginx/error.log;
events { worker_connections 1024; }
http {
	access_log off;
	sendfile on;
	server {
		listen 127.0.0.1:$P_NGINX ssl;
		ssl_certificate $W/cert.pem;
		ssl_certificate_key $W/key.pem;
		root $CH;
		etag on;
	}
}
NGINX
nginx -c "$W/nginx/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
NGINX_PID=$!
for p in $P_OURS $P_NGINX; do
	for _ in $(seq 300); do curl -sfk -o /dev/null "https://127.0.0.1:$p/noarch/mid-1.0-0.conda" && break; sleep 0.1; done
done

pids_of() { case $1 in ours) echo "$OURS_PID" ;; nginx) echo "$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ')" ;; esac; }
reset_hwm() { for p in $(pids_of "$1"); do echo 5 >"/proc/$p/clear_refs" 2>/dev/null || true; done; }
peak_kib() { local m=0; for p in $(pids_of "$1"); do v=$(awk '/^VmHWM/{print $2}' "/proc/$p/status"); ((v > m)) && m=$v; done; echo "$m"; }
rss_kib() { local m=0; for p in $(pids_of "$1"); do v=$(awk '/^VmRSS/{print $2}' "/proc/$p/status"); ((v > m)) && m=$v; done; echo "$m"; }
port_of() { case $1 in ours) echo "$P_OURS" ;; nginx) echo "$P_NGINX" ;; esac; }
RESULTS=$W/results.jsonl

measure() { # measure TARGET NAME RUN DLGEN-ARGS...
	local target=$1 name=$2 r=$3 out before
	shift 3
	reset_hwm "$target"
	before=$(rss_kib "$target")
	out=$("$W/dlgen" -ca "$W/cert.pem" "$@")
	python3 -c "import json,sys; d=json.loads(sys.argv[1]); d.update(target='$target', workload='$name', run=$r, peak_rss_kib=$(peak_kib "$target"), rss_before_kib=$before); print(json.dumps(d))" "$out" >>"$RESULTS"
}

for r in $(seq "$RUNS"); do
	order=(ours nginx)
	((r % 2)) || order=(nginx ours)
	for t in "${order[@]}"; do
		u="https://127.0.0.1:$(port_of "$t")"
		echo "run $r: $t" >&2
		measure "$t" "$BIG c=1" "$r" -url "$u/noarch/big-1.0-0.conda" -c 1 -n "$N_BIG"
		measure "$t" "$BIG c=8" "$r" -url "$u/noarch/big-1.0-0.conda" -c 8 -n $((N_BIG * 8))
		measure "$t" "1MiB c=1" "$r" -url "$u/noarch/mid-1.0-0.conda" -c 1 -n "$N_SMALL"
		measure "$t" "repodata.json ($SCALE) 304" "$r" -url "$u/linux-64/repodata.json" -c 1 -n "$N_304" -etag
		measure "$t" "$HUGE c=8" "$r" -url "$u/noarch/huge-1.0-0.conda" -c 8 -n 8
	done
done

# Serving alone: a second server whose channel holds only the large
# package, so that its RSS is what serving costs.
ALONE=$W/alone
mkdir -p "$ALONE/noarch"
ln "$CH/noarch/huge-1.0-0.conda" "$ALONE/noarch/"
chown -R 65534:65534 "$ALONE"
P_ALONE=$(free_port)
sed -e "s|^write_dir = .*|write_dir = \"$ALONE\"|" -e "s|^listen = .*|listen = \"127.0.0.1:$P_ALONE\"|" "$W/config.toml" >"$W/alone.toml"
"$W/server" --config "$W/alone.toml" 2>"$W/alone.log" &
PIDS+=($!)
ALONE_PID=$!
for _ in $(seq 300); do curl -sfk -o /dev/null "https://127.0.0.1:$P_ALONE/healthz" && break; sleep 0.1; done
alone_before=$(awk '/^VmRSS/{print $2}' "/proc/$ALONE_PID/status")
"$W/dlgen" -ca "$W/cert.pem" -url "https://127.0.0.1:$P_ALONE/noarch/huge-1.0-0.conda" -c 8 -n 8 >/dev/null
alone_peak=$(awk '/^VmHWM/{print $2}' "/proc/$ALONE_PID/status")

# Uploads while downloads run: uploads of $BIG at c=1, alone and with 8
# clients downloading the big package meanwhile.
up() { "$W/loadgen" -url "https://127.0.0.1:$P_OURS/" -target ours -token "$TOKEN" -c 1 -n "$N_BIG" -size "$BIG" -prefix "up$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["goodput_mb_s"])'; }
alone=() busy=()
for r in $(seq "$RUNS"); do
	alone+=("$(up "a$r")")
	"$W/dlgen" -ca "$W/cert.pem" -url "https://127.0.0.1:$P_OURS/noarch/big-1.0-0.conda" -c 8 -n 100000 >/dev/null 2>&1 &
	DL=$!
	sleep 0.5
	busy+=("$(up "b$r")")
	kill "$DL" 2>/dev/null || true
	wait "$DL" 2>/dev/null || true
	find "$CH/linux-64" -name 'up*' -delete
done

python3 - "$RESULTS" "${alone[*]}" "${busy[*]}" "$alone_before" "$alone_peak" "$HUGE" <<'REPORT'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
alone = [float(x) for x in sys.argv[2].split()]
busy = [float(x) for x in sys.argv[3].split()]
alone_before, alone_peak, huge = int(sys.argv[4]) / 1024, int(sys.argv[5]) / 1024, sys.argv[6]
work = []
for r in rows:
    if r["workload"] not in work:
        work.append(r["workload"])
print("| workload | ours | nginx | ours / nginx (median of runs) |")
print("|---|---|---|---|")
bad = False
for w in work:
    runs = sorted({r["run"] for r in rows if r["workload"] == w})
    def get(t, run):
        return next(r for r in rows if r["workload"] == w and r["target"] == t and r["run"] == run)
    latency = "304" in w or w.startswith("1MiB")
    key = "p50_ms" if latency else "goodput_mb_s"
    unit = "ms p50" if latency else "MB/s"
    o = statistics.median(get("ours", x)[key] for x in runs)
    n = statistics.median(get("nginx", x)[key] for x in runs)
    ratio = statistics.median(get("ours", x)[key] / get("nginx", x)[key] for x in runs)
    print(f"| {w} | {o:.2f} {unit} | {n:.2f} {unit} | {ratio:.2f}x |")
    if w == work[-1]:
        po = statistics.median(get("ours", x)["peak_rss_kib"] for x in runs) / 1024
        bo = statistics.median(get("ours", x)["rss_before_kib"] for x in runs) / 1024
        pn = statistics.median(get("nginx", x)["peak_rss_kib"] for x in runs) / 1024
        print(f"| {w}: peak RSS (RSS before it) | {po:.1f} MiB ({bo:.1f} MiB before: the process also holds the linux-64 index and what earlier workloads left) | {pn:.1f} MiB (largest process) | |")
    codes = {c for x in runs for t in ("ours", "nginx") for c in get(t, x)["codes"]}
    want = {"304"} if "304" in w else {"200"}
    if codes != want:
        print(f"| {w}: status codes {sorted(codes)}, want {sorted(want)} | | | |")
        bad = True
print(f"| {huge} c=8, a server that holds only that file: peak RSS | {alone_peak:.1f} MiB ({alone_before:.1f} MiB before) | | |")
ratios = [b / a for a, b in zip(alone, busy)]
print(f"| uploads at c=1 with 8 downloads running | {statistics.median(busy):.0f} MB/s | alone: {statistics.median(alone):.0f} MB/s | {statistics.median(ratios):.2f}x of alone |")
sys.exit(1 if bad else 0)
REPORT
