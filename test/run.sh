#!/usr/bin/env bash
# Runs the whole test suite: formatting, go vet, staticcheck, every Go test
# (unit, integration against real TLS servers, curl and Python requests
# clients, the real binary as a process, systemd-socket-activate, Landlock),
# the fuzz targets for a bounded time, the packages (built and linted), and
# the end-to-end test in a booted systemd (test/e2e/run.sh).
#
# Run it as root on Debian 12 or later with Go, gcc and git: some tests
# need root (privilege drop, Landlock as another user, tmpfs mounts), and
# missing tools are installed with apt-get, npm and `go install`.
#
# Environment:
#   FUZZTIME   per fuzz target: executions ("200000x") or a duration ("10m");
#              the default is a count per target worth about 30 s here.
#              Counts, because Go 1.26's fuzz coordinator can fail a run
#              with "context deadline exceeded" at the end of a duration
#              budget (golang/go#75804, fixed in Go 1.27). 0 skips fuzzing.
#   TEST_OUT   where the whole `go test -json` log goes (dist/test).
#
# A test that needs something this machine lacks fails here with the
# command that fixes it (internal/testneed), and a test that skips fails
# the run: in a plain `go test ./...` the same tests skip, naming the need.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZTIME=${FUZZTIME:-}
TEST_OUT=${TEST_OUT:-dist/test}
export CONDA_UPLOAD_TEST_STRICT=1
STATICCHECK=honnef.co/go/tools/cmd/staticcheck@v0.8.2

# Tools the tests use, by the Debian package that brings them.
declare -A need=(
	[gcc]=gcc
	[curl]=curl
	[bzip2]=bzip2
	[make]=make
	[systemd-socket-activate]=systemd
	[systemd-analyze]=systemd
	[debootstrap]=debootstrap
	[systemd-nspawn]=systemd-container
	[zstd]=zstd
	[ss]=iproute2
	[mount]=mount
	[openssl]=openssl
	[lintian]=lintian
	[rpmlint]=rpmlint
	[rpm]=rpm
	[shellcheck]=shellcheck
	[testssl]=testssl.sh
	[nginx]=nginx-light
	[node]=nodejs
	[npm]=npm
	[chromium]=chromium
)
missing=()
for cmd in "${!need[@]}"; do
	command -v "$cmd" >/dev/null || missing+=("${need[$cmd]}")
done
/usr/bin/python3 -c 'import requests' 2>/dev/null || missing+=(python3-requests)
# Debian's own awscli, by path: the mirror's test lists the bucket with it.
[[ -x /usr/bin/aws ]] || missing+=(awscli)
# The module proxy and npm are reached over HTTPS.
[[ -e /etc/ssl/certs/ca-certificates.crt ]] || missing+=(ca-certificates)
if ((${#missing[@]})); then
	if [[ $(id -u) != 0 ]]; then
		echo "test/run.sh: missing ${missing[*]}; run as root or: apt-get install ${missing[*]}" >&2
		exit 1
	fi
	echo "== installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The S3 server the mirror's tests run against: the Versity S3 gateway, a
# Go module, built from the module proxy (the version internal/s3test names).
if ! command -v versitygw >/dev/null; then
	echo "== installing versitygw"
	GOBIN=/usr/local/bin go install github.com/versity/versitygw/cmd/versitygw@v1.8.0
fi

echo "== rattler solver (npm)"
(cd test/rattler && npm install --no-audit --no-fund --loglevel=error)
(cd test/browser && npm ci --no-audit --no-fund --loglevel=error)

echo "== gofmt"
unformatted=$(gofmt -l .)
if [[ -n $unformatted ]]; then
	echo "gofmt would change: $unformatted" >&2
	exit 1
fi

echo "== shellcheck"
shellcheck -x .ci/run test/*.sh test/e2e/*.sh test/bench/*.sh

echo "== go vet"
go vet ./...
echo "== go vet (GOOS=darwin: the Linux-only calls stay behind build tags)"
GOOS=darwin go vet ./...

echo "== staticcheck"
go run "$STATICCHECK" ./...

echo "== go test (no test may skip; the whole log: $TEST_OUT/go-test.json)"
go test -race -count=1 -json ./... | go run ./test/testreport -o "$TEST_OUT/go-test.json"

if [[ $FUZZTIME != 0 ]]; then
	for target in condapkg:FuzzTarBz2:50000x condapkg:FuzzConda:300000x condapkg:FuzzParseFilename:500000x server:FuzzUpload:60000x form:FuzzReader:500000x repodata:FuzzShardKey:2000x channel:FuzzResolve:100000x server:FuzzCleanPath:50000x patch:FuzzPatch:200000x record:FuzzCheck:200000x server:FuzzCheckJSON:30000x sidecar:FuzzMerge:200000x proxy:FuzzFilter:20000x proxy:FuzzChannelData:20000x; do
		IFS=: read -r pkg name budget <<<"$target"
		echo "== fuzz $name (${FUZZTIME:-$budget})"
		go test -run '^$' -fuzz "^$name\$" -fuzztime "${FUZZTIME:-$budget}" -fuzzminimizetime 100x "./internal/$pkg/"
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
