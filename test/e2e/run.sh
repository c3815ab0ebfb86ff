#!/usr/bin/env bash
# End-to-end test of the packages in a real systemd: boots systemd as PID 1
# with systemd-nspawn on a debootstrapped Debian 12 rootfs, installs the
# .deb, follows docs/install.md's steps exactly, and checks
# socket activation, Type=notify, the privilege drop, Landlock, the
# watchdog, a stop during an upload, removal and purge. Run as root on a
# Debian 12 host (PID 1 need not be systemd).
#
# Usage: test/e2e/run.sh            (builds the packages with make first)
# Env:   E2E_CACHE=/var/cache/conda-upload-server-e2e   rootfs cache, outside the clone
#        E2E_TIMEOUT=1200                               hard bound for the whole run (s)
#        PORT=8443                                      the socket unit's port
#
# The rootfs is only read (--volatile=overlay): every run starts from a
# pristine system. Only processes this script started are stopped, by PID.
set -Eeuo pipefail

if [[ -z "${E2E_INNER:-}" ]]; then
	exec timeout -k 30 "${E2E_TIMEOUT:-1200}" env E2E_INNER=1 bash "$0" "$@"
fi

cd "$(dirname "$0")/../.."
REPO=$(pwd)
CACHE=${E2E_CACHE:-/var/cache/conda-upload-server-e2e}
ROOTFS=$CACHE/rootfs
WORK=$(mktemp -d /tmp/conda-upload-e2e.XXXXXX)
ART=$WORK/artifacts
MACHINE=cue2e-$$
PORT=${PORT:-8443}
TOKEN=e2e-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
# The Debian mirror this machine already uses; never a host name in the repo.
MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[[ -n $MIRROR ]] || MIRROR=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
export PATH=$PATH:/usr/sbin:/sbin

T0=$(date +%s)
log() { printf '\n=== [%4ss] %s\n' "$(($(date +%s) - T0))" "$*"; }
PASS=0 FAILED=0
check() { # check "what" command...
	local what=$1
	shift
	if "$@"; then
		PASS=$((PASS + 1))
		echo "  ok: $what"
	else
		FAILED=$((FAILED + 1))
		echo "  NOT OK: $what"
	fi
}
die() {
	echo "FAIL: $*" >&2
	exit 1
}
[[ $(id -u) == 0 ]] || die "run as root"

# ------------------------------------------------------------ cleanup
TIMEOUT_PID='' NSPAWN_PID='' LEADER='' UPLOAD_PID=''
CG_PRE_UNIFIED=0 CG_PRE_SYSTEMD=0
[[ -d /sys/fs/cgroup/unified/payload ]] && CG_PRE_UNIFIED=1
[[ -d /sys/fs/cgroup/systemd/payload ]] && CG_PRE_SYSTEMD=1
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	[[ -n $UPLOAD_PID ]] && kill "$UPLOAD_PID" 2>/dev/null
	if [[ -n $NSPAWN_PID ]] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
		if ((rc != 0)) && [[ -n $LEADER ]]; then
			echo "--- journal of conda-upload (last 60 lines)"
			nsenter -t "$LEADER" -a journalctl -b -u conda-upload.service -u conda-upload.socket --no-pager 2>/dev/null | tail -60 || true
		fi
		kill -TERM "$NSPAWN_PID" 2>/dev/null || true
		for _ in $(seq 200); do
			kill -0 "$NSPAWN_PID" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$NSPAWN_PID" 2>/dev/null; then
			[[ -n $LEADER ]] && kill -KILL "$LEADER" 2>/dev/null
			sleep 1
			kill -KILL "$NSPAWN_PID" 2>/dev/null || true
		fi
	fi
	[[ -n $TIMEOUT_PID ]] && wait "$TIMEOUT_PID" 2>/dev/null
	# What nspawn leaves behind on a host whose PID 1 is not systemd.
	if [[ $CG_PRE_UNIFIED == 0 && -d /sys/fs/cgroup/unified/payload ]]; then
		find /sys/fs/cgroup/unified/payload -depth -type d -exec rmdir {} \; 2>/dev/null
	fi
	if [[ $CG_PRE_SYSTEMD == 0 && -d /sys/fs/cgroup/systemd/payload ]]; then
		find /sys/fs/cgroup/systemd/payload -depth -type d -exec rmdir {} \; 2>/dev/null
	fi
	rm -rf "/run/systemd/nspawn/propagate/$MACHINE" "$WORK"
	printf '\n=== e2e took %ss, exit %d\ne2e: %d passed, %d failed\n' "$(($(date +%s) - T0))" "$rc" "$PASS" "$FAILED"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' INT TERM

# ------------------------------------------------------------ host tools
log "host tools"
need=()
for t in debootstrap:debootstrap systemd-nspawn:systemd-container curl:curl zstd:zstd ss:iproute2 nsenter:util-linux openssl:openssl rpm:rpm shellcheck:shellcheck; do
	command -v "${t%%:*}" >/dev/null || need+=("${t#*:}")
done
/usr/bin/python3 -c 'import requests' 2>/dev/null || need+=(python3-requests)
if ((${#need[@]})); then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# ------------------------------------------------------------ packages
log "build packages"
make -s packages >/dev/null
mkdir -p "$ART"
cp dist/*.deb dist/*.rpm "$ART/"
DEB=$(basename "$(ls "$ART"/*.deb)")
RPM=$ART/$(basename "$(ls "$ART"/*.rpm)")
go run ./test/mkpkg -o "$WORK/e2e-small-1.0-0.conda" -subdir linux-64 >/dev/null
go run ./test/mkpkg -o "$WORK/e2e-big-1.0-0.conda" -subdir linux-64 -size 400MiB >/dev/null
ls -la "$ART"

# ------------------------------------------------------------ rootfs
log "rootfs ($ROOTFS)"
if [[ ! -f $ROOTFS/.rootfs-complete ]]; then
	[[ -n $MIRROR ]] || die "no Debian mirror in the apt sources"
	rm -rf "$ROOTFS" "$CACHE/rootfs.tmp"
	mkdir -p "$CACHE"
	timeout 900 debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus bookworm "$CACHE/rootfs.tmp" "$MIRROR" \
		>"$CACHE/debootstrap.log" 2>&1 || {
		tail -20 "$CACHE/debootstrap.log"
		die "debootstrap failed"
	}
	echo cue2e >"$CACHE/rootfs.tmp/etc/hostname"
	: >"$CACHE/rootfs.tmp/etc/machine-id"
	rm -rf "$CACHE/rootfs.tmp"/var/lib/apt/lists/* "$CACHE/rootfs.tmp"/var/cache/apt/*.bin "$CACHE/rootfs.tmp"/var/cache/apt/archives/*.deb
	touch "$CACHE/rootfs.tmp/.rootfs-complete"
	mv "$CACHE/rootfs.tmp" "$ROOTFS"
else
	echo "cached"
fi

# ------------------------------------------------------------ boot
log "boot systemd as PID 1"
if ss -Hltn "sport = :$PORT" | grep -q .; then die "port $PORT is in use on the host"; fi
# --register=no --keep-unit: no machined or system bus on this host.
# --system-call-filter: nspawn's own filter lacks landlock_* and bpf.
export SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1
timeout -k 10 1100 systemd-nspawn -D "$ROOTFS" -M "$MACHINE" --register=no --keep-unit --volatile=overlay \
	--bind-ro="$ART:/artifacts" --console=pipe \
	--system-call-filter="landlock_create_ruleset landlock_add_rule landlock_restrict_self bpf" --boot \
	</dev/null >"$WORK/nspawn.log" 2>&1 &
TIMEOUT_PID=$!
for _ in $(seq 100); do
	NSPAWN_PID=$(pgrep -P "$TIMEOUT_PID" -x systemd-nspawn || true)
	[[ -n $NSPAWN_PID ]] && LEADER=$(pgrep -P "$NSPAWN_PID" -x systemd || true)
	[[ -n $LEADER ]] && break
	sleep 0.1
done
[[ -n $LEADER ]] || {
	cat "$WORK/nspawn.log"
	die "container did not start"
}
cx() { nsenter -t "$LEADER" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 SYSTEMD_PAGER= "$@"; }
state=''
for _ in $(seq 300); do
	state=$(cx systemctl is-system-running 2>/dev/null || true)
	[[ $state == running || $state == degraded ]] && break
	sleep 0.2
done
check "container booted (state $state)" test "$state" = running -o "$state" = degraded
show() { cx systemctl show -P "$1" conda-upload.service; }

# ------------------------------------------------------------ install
log "dpkg -i $DEB"
cx dpkg -i "/artifacts/$DEB"
check "user conda-upload created" cx id conda-upload
check "channel directory created, owned by conda-upload" test "$(cx stat -c %U:%a /var/lib/conda-upload-server/channel)" = conda-upload:755
check "units not enabled by the install" test "$(cx systemctl is-enabled conda-upload.socket || true)" = disabled
check "service not started by the install" test "$(show ActiveState)" = inactive

# docs/install.md's steps, as an admin types them.
log "admin steps from docs/install.md"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
	-addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
# 1. Certificate and key; the key root:conda-upload 0640.
cx install -m 0644 /dev/stdin /etc/conda-upload-server/tls/cert.pem <"$WORK/cert.pem"
cx install -m 0640 -g conda-upload /dev/stdin /etc/conda-upload-server/tls/key.pem <"$WORK/key.pem"
# 2. The token hash; the token is read from standard input.
printf '%s\n' "$TOKEN" | cx sh -c 'conda-upload-server hash-token > /etc/conda-upload-server/token.hash'
check "token hash written" test "$(cx cat /etc/conda-upload-server/token.hash)" = "$(printf '%s' "42679ad04d44c96ed27470c02bfb28c3$TOKEN" | sha256sum | cut -d' ' -f1)"
# 3. Enable the socket.
cx systemctl enable --now conda-upload.socket
check "socket listening" test "$(cx systemctl show -P SubState conda-upload.socket)" = listening
check "service not running before the first connection" test "$(show ActiveState)" = inactive

# ------------------------------------------------------------ uploads
log "uploads from the host: curl and the original README's Python client"
URL=https://localhost:$PORT/
resp=$(curl -sS --cacert "$WORK/cert.pem" --max-time 60 -w '\n%{http_code}' -F "token=$TOKEN" \
	-F "artifact=@$REPO/testdata/conda-pkgs/cph/mock-2.0.0-py37_1000.conda" "$URL")
echo "$resp"
check "curl upload: 201" test "$(tail -1 <<<"$resp")" = 201
py=$(/usr/bin/python3 -W ignore - "$REPO/testdata/conda-pkgs/conda/linux-64/zlib-1.2.11-h7b6447c_3.tar.bz2" "$WORK/e2e-small-1.0-0.conda" <<EOF
import requests, sys
url = '$URL'
token = '$TOKEN'
for path in sys.argv[1:]:
    artifact = open(path, 'rb')
    r = requests.post(url, data={'token': token}, files={'artifact': artifact},
                      verify=False)
    print(r.status_code)
EOF
)
check "python requests uploads: 201 201" test "$(tr "\n" " " <<<"$py")" = "201 201 "
for f in osx-64/mock-2.0.0-py37_1000.conda linux-64/zlib-1.2.11-h7b6447c_3.tar.bz2 linux-64/e2e-small-1.0-0.conda; do
	check "$f in the channel" cx test -s "/var/lib/conda-upload-server/channel/$f"
done
check "linux-64/repodata.json lists the packages" bash -c "nsenter -t $LEADER -a cat /var/lib/conda-upload-server/channel/linux-64/repodata.json | grep -q e2e-small-1.0-0.conda"
check "service active/running (Type=notify reached READY)" test "$(show ActiveState)/$(show SubState)" = active/running
check "status line from sd_notify" bash -c "nsenter -t $LEADER -a systemctl show -P StatusText conda-upload.service | grep -q 'serving https'"

# ------------------------------------------------------------ operations
log "operations: metrics, readiness, audit log, reload"
metrics=$(curl -sS --cacert "$WORK/cert.pem" --max-time 10 "${URL}metrics")
check "/metrics counts the uploads" grep -q 'conda_upload_requests_total{code="201",reason="created"} 3' <<<"$metrics"
check "/readyz ready" curl -sS --fail --cacert "$WORK/cert.pem" --max-time 10 -o /dev/null "${URL}readyz"
check "audit log has one line per upload" test "$(cx wc -l </dev/null /var/lib/conda-upload-server/audit.jsonl 2>/dev/null | awk '{print $1}')" = 3
check "audit log lines are JSON without the token" bash -c "nsenter -t $LEADER -a cat /var/lib/conda-upload-server/audit.jsonl | grep -c '\"result\":\"created\"' | grep -qx 3 && ! nsenter -t $LEADER -a grep -q '$TOKEN' /var/lib/conda-upload-server/audit.jsonl"
check "logrotate snippet installed" cx test -f /etc/logrotate.d/conda-upload-server
pid0=$(show MainPID)
cx systemctl reload conda-upload.service
check "systemctl reload keeps the process" test "$(show MainPID)" = "$pid0"
check "reload re-read certificate and tokens" bash -c "nsenter -t $LEADER -a journalctl -b -u conda-upload.service --no-pager | grep -q 'tokens reloaded'"
check "journal lines carry no second timestamp" bash -c "! nsenter -t $LEADER -a journalctl -b -u conda-upload.service --no-pager -o cat | grep -q '^time='"

# ------------------------------------------------------------ serving the channel
log "serving the channel: [download] enabled, as docs/serving.md says"
check "the shipped config serves nothing" test "$(curl -sS --cacert "$WORK/cert.pem" --max-time 10 -o /dev/null -w '%{http_code}' "${URL}linux-64/repodata.json")" = 404
cx sed -i '/^\[download\]/,/^\[/ s/^enabled = false/enabled = true/' /etc/conda-upload-server/config.toml
cx systemctl restart conda-upload.service
rd=$(curl -sS --cacert "$WORK/cert.pem" --max-time 20 -D "$WORK/rd.headers" "${URL}linux-64/repodata.json")
check "GET linux-64/repodata.json lists the uploads" grep -q '"e2e-small-1.0-0.conda"' <<<"$rd"
etag=$(awk 'tolower($1)=="etag:"{print $2}' "$WORK/rd.headers" | tr -d '\r')
check "repodata.json revalidates: 304" test "$(curl -sS --cacert "$WORK/cert.pem" --max-time 10 -o /dev/null -w '%{http_code}' -H "If-None-Match: $etag" "${URL}linux-64/repodata.json")" = 304
check "the .zst and the shard index are served" curl -sS --fail --cacert "$WORK/cert.pem" --max-time 10 -o /dev/null "${URL}linux-64/repodata.json.zst" "${URL}linux-64/repodata_shards.msgpack.zst"
curl -sS --fail --cacert "$WORK/cert.pem" --max-time 60 -o "$WORK/fetched.conda" "${URL}osx-64/mock-2.0.0-py37_1000.conda"
check "the package comes back byte for byte" cmp "$WORK/fetched.conda" "$REPO/testdata/conda-pkgs/cph/mock-2.0.0-py37_1000.conda"
check "no dot-folder is served" test "$(curl -sS --cacert "$WORK/cert.pem" --max-time 10 -o /dev/null -w '%{http_code}' "${URL}linux-64/.index-cache/records.jsonl")" = 404

# ------------------------------------------------------------ confinement
log "confinement inside the container"
PID=$(show MainPID)
status=$(cx cat "/proc/$PID/status")
check "main process runs as conda-upload" test "$(awk '/^Uid:/{print $2}' <<<"$status")" = "$(cx id -u conda-upload)"
check "NoNewPrivs: 1" test "$(awk '/^NoNewPrivs:/{print $2}' <<<"$status")" = 1
score=$(cx systemd-analyze security --no-pager conda-upload.service | awk '/Overall exposure level/{print $(NF-2)}')
echo "systemd-analyze security conda-upload.service: $score"
check "exposure $score <= 1.0" awk -v s="$score" 'BEGIN{exit !(s <= 1.0)}'
check "log states Landlock enforced" bash -c "nsenter -t $LEADER -a journalctl -b -u conda-upload.service --no-pager | grep -q 'landlock ABI [0-9]* enforced'"
# A Landlock probe from inside the service's sandbox: an indexer stand-in
# (the service's child, so under its Landlock domain) tries to read a file
# the conda-upload user may read but the sandbox does not allow, and to
# write next to the channel.
cx mkdir -p /opt/probe/bin
cx sh -c 'cat > /opt/probe/bin/conda' <<'EOF'
#!/bin/sh
# conda stand-in: index --subdir SUBDIR CHANNEL
sub=$3 ch=$4
{
	if cat /etc/hostname >/dev/null 2>&1; then echo read=ok; else echo read=denied; fi
	if (: >/var/lib/conda-upload-server/escape) 2>/dev/null; then echo write=ok; else echo write=denied; fi
} >"$ch/probe.txt"
mkdir -p "$ch/$sub"
printf '{"info":{"subdir":"%s"},"packages":{},"packages.conda":{%s},"removed":[],"repodata_version":1}' "$sub" \
	"$(cd "$ch/$sub" && for f in *.conda; do [ -e "$f" ] && printf '"%s":{},' "$f"; done | sed 's/,$//')" >"$ch/$sub/repodata.json"
EOF
cx chmod 755 /opt/probe/bin/conda
cx sed -i 's|^conda_exe = ""|conda_exe = "/opt/probe/bin/conda"|' /etc/conda-upload-server/config.toml
cx systemctl restart conda-upload.service
go run ./test/mkpkg -o "$WORK/e2e-probe-1.0-0.conda" -subdir noarch >/dev/null
code=$(curl -sS --cacert "$WORK/cert.pem" --max-time 60 -o "$WORK/probe.json" -w '%{http_code}' -F "token=$TOKEN" -F "artifact=@$WORK/e2e-probe-1.0-0.conda" "$URL")
cat "$WORK/probe.json"
check "upload indexed by the conda stand-in: 201" test "$code" = 201
probe=$(cx cat /var/lib/conda-upload-server/channel/probe.txt || true)
echo "probe: $(tr "\n" " " <<<"$probe")"
check "Landlock denies the indexer reading /etc/hostname" grep -qx read=denied <<<"$probe"
check "Landlock denies the indexer writing outside the channel" grep -qx write=denied <<<"$probe"
check "the root shell can read /etc/hostname (so the denial is Landlock's)" cx cat /etc/hostname
cx sed -i 's|^conda_exe = "/opt/probe/bin/conda"|conda_exe = ""|' /etc/conda-upload-server/config.toml
cx rm -f /var/lib/conda-upload-server/channel/probe.txt
cx systemctl restart conda-upload.service

# ------------------------------------------------------------ watchdog
log "watchdog: an unwritable channel stops the pings; systemd restarts the service"
# Test-only drop-in: a short watchdog so that the test takes seconds.
cx mkdir -p /etc/systemd/system/conda-upload.service.d
printf '[Service]\nWatchdogSec=4s\n' | cx tee /etc/systemd/system/conda-upload.service.d/e2e-watchdog.conf >/dev/null
cx systemctl daemon-reload
cx systemctl restart conda-upload.service
pid1=$(show MainPID)
restarts0=$(show NRestarts)
cx chmod 0500 /var/lib/conda-upload-server/channel/.incoming
killed=no
for _ in $(seq 150); do # up to 30 s
	if [[ $(show NRestarts) -gt $restarts0 || $(show MainPID) != "$pid1" ]]; then
		killed=yes
		break
	fi
	sleep 0.2
done
cx chmod 0700 /var/lib/conda-upload-server/channel/.incoming
check "watchdog killed pid $pid1" test $killed = yes
check "journal records the watchdog timeout" bash -c "nsenter -t $LEADER -a journalctl -b -u conda-upload.service --no-pager | grep -q 'Watchdog timeout'"
for _ in $(seq 100); do
	[[ $(show SubState) == running ]] && break
	cx systemctl reset-failed conda-upload.service 2>/dev/null || true
	[[ $(show ActiveState) == failed || $(show ActiveState) == inactive ]] && cx systemctl start conda-upload.service 2>/dev/null
	sleep 0.2
done
go run ./test/mkpkg -o "$WORK/e2e-after-1.0-0.conda" -subdir noarch >/dev/null
code=$(curl -sS --cacert "$WORK/cert.pem" --max-time 60 -o /dev/null -w '%{http_code}' -F "token=$TOKEN" -F "artifact=@$WORK/e2e-after-1.0-0.conda" "$URL")
check "uploads work after the restart (pid $(show MainPID)): $code" test "$code" = 201
cx rm -f /etc/systemd/system/conda-upload.service.d/e2e-watchdog.conf
cx systemctl daemon-reload

# ------------------------------------------------------------ stop during an upload
log "systemctl stop during a 400 MiB upload"
curl -sS --cacert "$WORK/cert.pem" --max-time 120 --limit-rate 40M -o "$WORK/big.json" -w '%{http_code}' \
	-F "token=$TOKEN" -F "artifact=@$WORK/e2e-big-1.0-0.conda" "$URL" >"$WORK/big.code" 2>"$WORK/big.err" &
UPLOAD_PID=$!
# Stop once the upload is in flight: the metrics say so.
for _ in $(seq 100); do
	curl -sS --cacert "$WORK/cert.pem" --max-time 5 "${URL}metrics" | grep -qx 'conda_upload_in_flight 1' && break
	sleep 0.1
done
cx systemctl stop conda-upload.service
wait "$UPLOAD_PID" || true
UPLOAD_PID=''
code=$(cat "$WORK/big.code" 2>/dev/null || true)
echo "client saw: ${code:-no status} $(cat "$WORK/big.err" 2>/dev/null)"
final=/var/lib/conda-upload-server/channel/linux-64/e2e-big-1.0-0.conda
if [[ $code == 201 ]]; then
	check "upload finished during the drain: stored file is complete" \
		test "$(cx sha256sum "$final" | cut -d' ' -f1)" = "$(sha256sum "$WORK/e2e-big-1.0-0.conda" | cut -d' ' -f1)"
else
	check "upload refused by the stop: no file at the final path" bash -c "! nsenter -t $LEADER -a test -e $final"
fi
cx systemctl start conda-upload.service
curl -sS --cacert "$WORK/cert.pem" --max-time 30 -o /dev/null "${URL}healthz"
check "no temp file left once restarted" test -z "$(cx find /var/lib/conda-upload-server/channel/.incoming -type f)"

# ------------------------------------------------------------ removal
log "dpkg -r and dpkg -P"
cx dpkg -r conda-upload-server
check "units stopped by removal" test "$(cx systemctl is-active conda-upload.socket || true)" = inactive
check "config kept after remove" cx test -f /etc/conda-upload-server/config.toml
purge=$(cx dpkg -P conda-upload-server 2>&1)
echo "$purge"
check "config removed by purge" bash -c "! nsenter -t $LEADER -a test -e /etc/conda-upload-server/config.toml"
check "channel data kept by purge" cx test -s /var/lib/conda-upload-server/channel/osx-64/mock-2.0.0-py37_1000.conda
check "purge says the channel was kept" grep -q "kept the channel" <<<"$purge"

# ------------------------------------------------------------ rpm
log "rpm (inspected only: no rpm-based system boots here)"
check "rpm lists the binary and units" bash -c "rpm -qpl '$RPM' | grep -q /usr/lib/systemd/system/conda-upload.socket"
check "rpm scripts pass shellcheck" bash -c "rpm -qp --scripts '$RPM' | awk '/scriptlet \\(using/{next} {print}' | shellcheck -s sh -"

[[ $FAILED == 0 ]] || exit 1
