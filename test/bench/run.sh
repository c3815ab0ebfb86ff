#!/usr/bin/env bash
# Upload benchmark: conda-upload-server against nginx (writing request
# bodies to disk) and a plain Go standard-library HTTPS sink, driven by the
# same client (test/bench/loadgen) in alternating runs, on this machine.
# Prints a Markdown table of medians with ratios computed run by run.
#
# Usage: test/bench/run.sh            full suite (about 25 minutes on 2 cores,
#                                     with index-scale.sh and download.sh)
#        QUICK=1 test/bench/run.sh    smoke run: small sizes, one run (CI)
#        PROFILE=1 test/bench/run.sh  also profile the server with perf
# Run as root (the server drops to nobody; nginx is installed if missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=test/bench/lib.sh
. test/bench/lib.sh
bench_init conda-upload-bench

echo "building" >&2
CGO_ENABLED=0 go build -o "$W/server" ./cmd/conda-upload-server
go build -o "$W/loadgen" ./test/bench/loadgen
go build -o "$W/sink" ./test/bench/sink
go build -o "$W/delay" ./test/bench/delay
bench_cert

# conda-upload-server, as it would run: dropped to nobody, Landlock on.
TOKEN=bench-$RANDOM$RANDOM
mkdir -p "$W/channel"
chown 65534:65534 "$W/channel"
P_OURS=$(free_port)
cat >"$W/config.toml" <<EOF
user = "nobody"
write_dir = "$W/channel"
port = $P_OURS
certfile = "$W/cert.pem"
keyfile = "$W/key.pem"
token_hash = "$(printf '%s' "$TOKEN" | "$W/server" hash-token)"
max_upload_size = "5GiB"
[sandbox]
landlock = "enforce"
EOF
"$W/server" --config "$W/config.toml" 2>"$W/server.log" &
PIDS+=($!)
OURS_PID=$!

P_SINK=$(free_port)
mkdir -p "$W/sink-tmp"
"$W/sink" -addr "127.0.0.1:$P_SINK" -cert "$W/cert.pem" -key "$W/key.pem" -dir "$W/sink-tmp" 2>"$W/sink.log" &
PIDS+=($!)
SINK_PID=$!

# nginx writes every request body to a file (client_body_in_file_only),
# then answers 201; proxying to a second server block is what makes it
# read the whole body before answering.
P_NGINX=$(free_port) P_NGINX2=$(free_port)
mkdir -p "$W/nginx/body"
cat >"$W/nginx/nginx.conf" <<EOF
worker_processes auto;
pid $W/nginx/nginx.pid;
error_log $W/nginx/error.log;
events { worker_connections 1024; }
http {
	access_log off;
	client_body_temp_path $W/nginx/body;
	proxy_temp_path $W/nginx/body;
	server {
		listen 127.0.0.1:$P_NGINX ssl;
		ssl_certificate $W/cert.pem;
		ssl_certificate_key $W/key.pem;
		client_max_body_size 0;
		client_body_in_file_only clean;
		client_body_buffer_size 1m;
		location / { proxy_pass http://127.0.0.1:$P_NGINX2; proxy_set_body "done"; }
	}
	server {
		listen 127.0.0.1:$P_NGINX2;
		location / { return 201; }
	}
}
EOF
nginx -c "$W/nginx/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
NGINX_PID=$!

for p in $P_OURS $P_SINK $P_NGINX; do
	for _ in $(seq 100); do curl -sk -o /dev/null "https://127.0.0.1:$p/" && break; sleep 0.1; done
done

pids_of() { # the target's processes: nginx's master and workers
	case $1 in
	ours) echo "$OURS_PID" ;;
	sink) echo "$SINK_PID" ;;
	nginx) echo "$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ')" ;;
	esac
}
cpu_ticks() { local t=0; for p in $(pids_of "$1"); do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo $t; }
reset_hwm() { for p in $(pids_of "$1"); do echo 5 >"/proc/$p/clear_refs" 2>/dev/null || true; done; }
peak_kib() { local m=0; for p in $(pids_of "$1"); do v=$(awk '/^VmHWM/{print $2}' "/proc/$p/status"); ((v > m)) && m=$v; done; echo "$m"; }
url_of() { case $1 in ours) echo "https://127.0.0.1:$P_OURS/" ;; sink) echo "https://127.0.0.1:$P_SINK/" ;; nginx) echo "https://127.0.0.1:$P_NGINX/" ;; esac; }
HZ=$(getconf CLK_TCK)
RESULTS=$W/results.jsonl

run() { # run TARGET SIZE C N RUN
	local target=$1 size=$2 c=$3 n=$4 r=$5 t0 out hwm cpu intact=-1 expect=()
	# Our stored files are checked against the sha256 the client
	# computes, after the run, from the packages it sent.
	[[ $target != ours ]] || expect=(-expect "$W/expect.txt")
	reset_hwm "$target"
	t0=$(cpu_ticks "$target")
	out=$("$W/loadgen" -url "$(url_of "$target")" -target "$target" -token "$TOKEN" -c "$c" -n "$n" -size "$size" \
		-prefix "b${size//[^0-9a-zA-Z]/}c${c}r${r}$target" "${expect[@]}")
	cpu=$(($(cpu_ticks "$target") - t0))
	hwm=$(peak_kib "$target")
	if [[ $target == ours ]]; then
		intact=$( (cd "$W/channel/linux-64" && sha256sum -c "$W/expect.txt") 2>/dev/null | grep -c ': OK$' || true)
	fi
	echo "$out" | python3 -c "import json,sys; d=json.load(sys.stdin); d.update(run=$r, cpu_s=$cpu/$HZ, peak_rss_kib=$hwm, intact=$intact, workload='$size c=$c'); print(json.dumps(d))" >>"$RESULTS"
	# Keep the disk bounded: drop what the server stored.
	find "$W/channel" -name '*.conda' -delete
}

# Each workload: size, concurrency, requests per run, runs.
if [[ -n ${QUICK:-} ]]; then
	WORKLOADS=("1MiB 1 8 1" "1MiB 8 16 1" "20MiB 1 2 1")
else
	# 4608MiB (4.5 GiB) crosses the 4 GiB line: a zip64 .conda, sizes
	# past 32 bits. One run: it shows the size works, not a rate.
	WORKLOADS=("1MiB 1 40 3" "1MiB 8 80 3" "100MiB 1 6 3" "100MiB 8 16 3" "1GiB 1 2 3" "1GiB 8 8 3" "4608MiB 1 1 1")
fi
for wl in "${WORKLOADS[@]}"; do
	read -r size c n runs <<<"$wl"
	for r in $(seq "$runs"); do
		# Alternate the order, so no target always runs on a warm cache.
		case $((r % 3)) in
		1) order="nginx sink ours" ;; 2) order="ours nginx sink" ;; 0) order="sink ours nginx" ;;
		esac
		for target in $order; do
			echo "$size c=$c run $r: $target" >&2
			run "$target" "$size" "$c" "$n" "$r"
		done
	done
done

# Burst: 100 small uploads into one subdir at once; index runs from /metrics.
runs_before=$(curl -sk "https://127.0.0.1:$P_OURS/metrics" | awk '/^conda_upload_index_runs_total/{print $2}')
burst=$("$W/loadgen" -url "$(url_of ours)" -target ours -token "$TOKEN" -c 16 -n 100 -size 64KiB -prefix burst -subdir noarch |
	python3 -c 'import json,sys; d=json.load(sys.stdin); print("%d ok, %d errors, p50 %.1f ms, p99 %.1f ms" % (d["ok"], d["errors"], d["p50_ms"], d["p99_ms"]))')
runs_after=$(curl -sk "https://127.0.0.1:$P_OURS/metrics" | awk '/^conda_upload_index_runs_total/{print $2}')
listed=$(python3 -c "import json; d=json.load(open('$W/channel/noarch/repodata.json')); print(sum(1 for k in d['packages.conda'] if k.startswith('burst-')))")

# Ceilings, measured in this run. Every upload goes through md5 and sha256
# (each on one core) and is fsynced before its 201, while nginx and the
# sink only write to the page cache: so one core's md5, the disk's durable
# write rate, and our own pipeline from memory (both digests and a durable
# file, no network: BenchmarkReceive) bound what any upload can reach.
echo "ceilings" >&2
benchtime=2s
[[ -z ${QUICK:-} ]] || benchtime=200ms
go test -run '^$' -bench 'BenchmarkDigest|BenchmarkReceive' -benchtime "$benchtime" ./internal/store |
	awk '/^Benchmark/ { n = $1; sub(/^Benchmark/, "", n); sub(/-[0-9]+$/, "", n); print n, $(NF-1) }' >"$W/ceilings.txt"
t0=$(date +%s%N)
dd if=/dev/zero of="$W/dd" bs=1M count=256 conv=fsync status=none
t1=$(date +%s%N)
rm -f "$W/dd"
echo "disk $(python3 -c "print(round(256 * 2**20 / 1e6 / (($t1 - $t0) / 1e9), 1))")" >>"$W/ceilings.txt"

# Over a link with a round-trip time (a delaying proxy: this kernel has no
# netem), HTTP/2 is held to one flow-control window per round trip.
echo "20 ms RTT" >&2
P_DELAY=$(free_port)
"$W/delay" -listen "127.0.0.1:$P_DELAY" -target "127.0.0.1:$P_OURS" -rtt 20ms &
PIDS+=($!)
for _ in $(seq 50); do curl -sk -o /dev/null "https://127.0.0.1:$P_DELAY/healthz" && break; sleep 0.1; done
rtt_size=100MiB
[[ -z ${QUICK:-} ]] || rtt_size=20MiB
for h2 in false true; do
	"$W/loadgen" -url "https://127.0.0.1:$P_DELAY/" -target ours -token "$TOKEN" -c 1 -n 3 -size "$rtt_size" \
		-prefix "rtt$h2" -http2="$h2" |
		python3 -c "import json,sys; d=json.load(sys.stdin); assert d['errors'] == 0, d; print('rtt20-h2=$h2', d['goodput_mb_s'])" >>"$W/ceilings.txt"
done

# Where a 1 MiB upload's time goes: the fsyncs it waits for, traced on the
# running server (strace slows the rest, not the fsyncs themselves).
if [[ -z ${QUICK:-} ]]; then
	command -v strace >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends strace >/dev/null
	strace -f -T -e trace=fsync,fdatasync -o "$W/strace.txt" -p "$OURS_PID" 2>/dev/null &
	STRACE_PID=$!
	sleep 1
	"$W/loadgen" -url "$(url_of ours)" -target ours -token "$TOKEN" -c 1 -n 40 -size 1MiB -prefix fsync >/dev/null
	kill -INT "$STRACE_PID"
	wait "$STRACE_PID" || true
	awk -F'[<>]' '/sync\(|sync resumed/ && / = 0 / { t += $(NF-1); n++ } END { printf "fsync %d %.2f\n", n / 40, t * 1000 / 40 }' "$W/strace.txt" >>"$W/ceilings.txt"
fi

# PROFILE=1: where the CPU goes, machine-wide, while ours takes 100 MiB
# uploads from one client (perf, sampling every process; the server has
# no profiling endpoint).
if [[ -n ${PROFILE:-} ]]; then
	command -v perf >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends linux-perf >/dev/null
	perf record -q -F 999 -g -a -o "$W/perf.data" -- \
		"$W/loadgen" -url "$(url_of ours)" -target ours -token "$TOKEN" -c 1 -n 6 -size 100MiB -prefix profile >"$W/profile.txt" 2>/dev/null
	{
		echo "CPU by process, 100 MiB uploads at c=1 (perf, % of all samples on all CPUs):"
		perf report -i "$W/perf.data" --no-children --sort comm --stdio 2>/dev/null | grep -E '^ +[0-9]' | sed -n 1,4p
		echo "top functions in the server (% of all samples):"
		perf report -i "$W/perf.data" --comm server --no-children --sort sym --stdio 2>/dev/null | grep -E '^ +[0-9]' | sed -n 1,12p
	} >&2
fi

python3 - "$RESULTS" "$W/ceilings.txt" <<EOF
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault((r["workload"], r["target"]), {})[r["run"]] = r
workloads = list(dict.fromkeys(r["workload"] for r in rows))
print("| workload | target | goodput MB/s | p50 ms | p99 ms | peak RSS MiB | CPU s/GiB | ok/errors (stored intact) |")
print("|---|---|---|---|---|---|---|---|")
ratios = []
for w in workloads:
    for t in ("ours", "nginx", "sink"):
        runs = list(by[(w, t)].values())
        med = lambda k: statistics.median(x[k] for x in runs)
        gib = sum(x["ok"] * x["size"] for x in runs) / 2**30
        cpu = sum(x["cpu_s"] for x in runs) / gib if gib else 0
        intact = f" ({sum(x['intact'] for x in runs)} intact)" if t == "ours" else ""
        print(f"| {w} | {t} | {med('goodput_mb_s'):.0f} | {med('p50_ms'):.1f} | {med('p99_ms'):.1f} | {max(x['peak_rss_kib'] for x in runs)/1024:.1f} | {cpu:.2f} | {sum(x['ok'] for x in runs)}/{sum(x['errors'] for x in runs)}{intact} |")
    pair = lambda k, o: statistics.median(by[(w, "ours")][r][k] / by[(w, o)][r][k] for r in by[(w, "ours")] if by[(w, o)][r][k])
    ratios.append((w, pair("goodput_mb_s", "nginx"), pair("goodput_mb_s", "sink"), pair("p50_ms", "nginx")))
print()
print("| workload | goodput ours/nginx | goodput ours/sink | p50 ours/nginx |")
print("|---|---|---|---|")
for w, a, b, c in ratios:
    print(f"| {w} | {a:.2f} | {b:.2f} | {c:.2f} |")
bad = [(r["workload"], r["run"]) for r in rows if r["target"] == "ours" and r["intact"] != r["ok"]]
if bad:
    sys.exit("bench: stored files differ from what the client sent in %s" % bad)
print()
ceil = {}
for line in open(sys.argv[2]):
    k, *v = line.split()
    ceil[k] = [float(x) for x in v]
print("ceilings in this run (MB/s): md5 on one core %.0f, sha256 on one core %.0f, durable disk write %.0f (dd conv=fsync), our receive pipeline from memory %.0f (BenchmarkReceive: both digests, durable file, no network)" % (ceil["Digest/md5"][0], ceil["Digest/sha256"][0], ceil["disk"][0], ceil["Receive"][0]))
print("over a 20 ms round trip (test/bench/delay), $rtt_size uploads to ours at c=1: HTTP/1.1 %.0f MB/s, HTTP/2 %.0f MB/s" % (ceil["rtt20-h2=false"][0], ceil["rtt20-h2=true"][0]))
if "fsync" in ceil:
    print("a 1 MiB upload at c=1 waits for %d fsyncs, %.2f ms in all (strace -T on the server)" % (ceil["fsync"][0], ceil["fsync"][1]))
print()
print("burst of 100 uploads (64 KiB, 16 clients) into noarch: $((${runs_after%.*} - ${runs_before%.*})) index runs; $listed of 100 listed in repodata.json after the last response; $burst")
EOF
if [[ -z ${QUICK:-} ]]; then
	echo
	echo "built-in indexer, adding one package to a subdir of N (go test -bench BenchmarkAddOne):"
	go test -run '^$' -bench 'BenchmarkAddOne' -benchtime 20x ./internal/repodata/ | grep Benchmark
fi
grep -c ' err=""' "$W/server.log" >/dev/null || true
echo "bench: all workloads ran" >&2

# Index files at scale (repodata.json, .zst, shards, run_exports.json),
# and serving the channel against nginx.
if [[ -n ${QUICK:-} ]]; then
	./test/bench/index-scale.sh 1000
	QUICK=1 ./test/bench/download.sh
else
	./test/bench/index-scale.sh 100000
	./test/bench/download.sh
fi
