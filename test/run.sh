#!/usr/bin/env bash
# Runs the whole test suite: formatting, go vet, staticcheck, every Go test
# (unit, integration against real TLS servers, curl and Python requests
# clients, the real binary as a process, systemd-socket-activate, Landlock),
# the fuzz targets for a bounded time, the packages (built and linted), and
# the end-to-end test in a booted systemd (test/e2e/run.sh).
#
# Run it as root on Debian 12 or later: some tests need root (privilege
# drop, Landlock as another user, tmpfs mounts), and missing tools are
# installed with apt-get.
#
# Environment:
#   FUZZTIME   time per fuzz target (default 30s; 0 skips fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZTIME=${FUZZTIME:-30s}
STATICCHECK=honnef.co/go/tools/cmd/staticcheck@v0.8.2

# Tools the tests use, by the Debian package that brings them.
declare -A need=(
	[curl]=curl
	[bzip2]=bzip2
	[make]=make
	[systemd-socket-activate]=systemd
	[systemd-analyze]=systemd
	[debootstrap]=debootstrap
	[systemd-nspawn]=systemd-container
	[zstd]=zstd
	[ss]=iproute2
	[openssl]=openssl
	[lintian]=lintian
	[rpmlint]=rpmlint
	[rpm]=rpm
	[shellcheck]=shellcheck
	[testssl]=testssl.sh
	[nginx]=nginx-light
)
missing=()
for cmd in "${!need[@]}"; do
	command -v "$cmd" >/dev/null || missing+=("${need[$cmd]}")
done
/usr/bin/python3 -c 'import requests' 2>/dev/null || missing+=(python3-requests)
if ((${#missing[@]})); then
	if [[ $(id -u) != 0 ]]; then
		echo "test/run.sh: missing ${missing[*]}; run as root or: apt-get install ${missing[*]}" >&2
		exit 1
	fi
	echo "== installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

echo "== gofmt"
unformatted=$(gofmt -l .)
if [[ -n $unformatted ]]; then
	echo "gofmt would change: $unformatted" >&2
	exit 1
fi

echo "== shellcheck"
shellcheck .ci/run test/*.sh test/e2e/*.sh

echo "== go vet"
go vet ./...

echo "== staticcheck"
go run "$STATICCHECK" ./...

echo "== go test"
go test -count=1 ./...

if [[ $FUZZTIME != 0 ]]; then
	for target in condapkg:FuzzTarBz2 condapkg:FuzzConda condapkg:FuzzParseFilename server:FuzzUpload; do
		echo "== fuzz ${target#*:} ($FUZZTIME)"
		go test -run '^$' -fuzz "^${target#*:}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime 100x "./internal/${target%%:*}/"
	done
fi
echo "== packages"
make -s packages
./test/lint-packages.sh

echo "== benchmark smoke run (figures are not asserted)"
QUICK=1 ./test/bench/run.sh

echo "== end-to-end in a booted systemd"
./test/e2e/run.sh

echo "== all tests passed"
