# conda-upload-server build. The README's commands do not need make; this
# is for the fast check, packages and the end-to-end test.

NFPM       := github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
ARCH       ?= amd64
# A release is tagged vX.Y.Z; any other commit gets BASE~git<n>.<hash>, so a
# build is never silently 0.0.0 and later commits sort later.
BASE       := $(shell cat packaging/VERSION)
TAG        := $(shell git describe --tags --exact-match --match 'v[0-9]*' 2>/dev/null)
VERSION    ?= $(if $(TAG),$(TAG:v%=%),$(BASE)~git$(shell git rev-list --count HEAD).$(shell git rev-parse --short=12 HEAD))
COMMIT     := $(shell git rev-parse HEAD)
EPOCH      := $(shell git log -1 --format=%ct)

.PHONY: all build check packages lint-packages e2e test bench clean

all: build

dist/conda-upload-server: FORCE
	mkdir -p dist
	CGO_ENABLED=0 GOARCH=$(ARCH) go build -trimpath \
		-ldflags "-s -w -X main.version=$(VERSION)" \
		-o $@ ./cmd/conda-upload-server

build: dist/conda-upload-server

dist/conda-upload-server.8.gz: packaging/conda-upload-server.8
	mkdir -p dist
	gzip -9n < $< > $@

dist/changelog.yml: packaging/changelog.yml FORCE
	mkdir -p dist
	{ if [ "$(VERSION)" != "$(BASE)" ]; then \
		printf -- '- semver: %s\n  date: %s\n  packager: conda-upload-server maintainers <maintainers@conda-upload-server.invalid>\n  deb:\n    urgency: medium\n    distributions: [unstable]\n  changes:\n    - note: Snapshot build of commit %s.\n' \
			"$(VERSION)-1" "$$(git log -1 --format=%cI)" "$(COMMIT)"; \
	fi; cat $<; } > $@

packages: dist/conda-upload-server dist/conda-upload-server.8.gz dist/changelog.yml
	@case "$(VERSION)" in ""|0.0.0*) echo "no version" >&2; exit 1;; esac
	rm -f dist/*.deb dist/*.rpm
	for p in deb rpm; do \
		SOURCE_DATE_EPOCH=$(EPOCH) VERSION=$(VERSION) ARCH=$(ARCH) go run $(NFPM) package -f nfpm.yaml -p $$p -t dist/ || exit 1; \
	done
	ls -l dist/

lint-packages: packages
	./test/lint-packages.sh

e2e: packages
	./test/e2e/run.sh

# The fast loop: formatting, vet, staticcheck, and the tests that need
# nothing outside Go (-short skips the others; see internal/testneed).
# test runs everything, as root.
check:
	@files=$$(gofmt -l .); if [ -n "$$files" ]; then echo "gofmt would change: $$files" >&2; exit 1; fi
	go vet ./...
	go run $(STATICCHECK) ./...
	go test -short ./...

test:
	./test/run.sh

bench:
	./test/bench/run.sh

clean:
	rm -rf dist

FORCE:
