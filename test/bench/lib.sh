# shellcheck shell=bash
# Set-up shared by the benchmark scripts; sourced, not run.

# bench_init checks for root, installs nginx and openssl when missing, and
# makes the work directory $W (removed on exit, with every process whose
# PID is in PIDS stopped first). $1 names the directory.
bench_init() {
	[[ $(id -u) == 0 ]] || { echo "run as root" >&2; exit 1; }
	local missing=()
	command -v nginx >/dev/null || missing+=(nginx-light)
	command -v openssl >/dev/null || missing+=(openssl)
	if ((${#missing[@]})); then
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi
	W=$(mktemp -d "/var/tmp/$1.XXXXXX")
	chmod 755 "$W"
	PIDS=()
	trap bench_cleanup EXIT
}

bench_cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$W"
}

# bench_cert writes a self-signed P-256 certificate for 127.0.0.1 to
# $W/cert.pem and $W/key.pem, readable by the unprivileged server.
bench_cert() {
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
		-addext subjectAltName=IP:127.0.0.1 -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null
	chmod 644 "$W/key.pem"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
