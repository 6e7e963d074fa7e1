# mailgate — `make test` runs every test; `make bench` measures.

GO      ?= go
PKGS    ?= ./...

.PHONY: all build deb test vet fuzz bench deps clean

all: build

# The binary names the revision it was built from and when (mailgate
# version, mailgate_build_info), even where GOFLAGS turns VCS stamping off
# or the go command cannot stamp it (a linked worktree): the linker is
# given both. SOURCE_DATE_EPOCH, when set, makes the date reproducible.
REVISION   ?= $(shell git rev-parse HEAD 2>/dev/null)$(shell git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo -dirty)
BUILD_DATE ?= $(shell date -u -d "@$${SOURCE_DATE_EPOCH:-$$(date +%s)}" +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS    ?= -X main.revision=$(REVISION) -X main.buildDate=$(BUILD_DATE)

build:
	$(GO) build -buildvcs=auto -ldflags "$(LDFLAGS)" -o bin/mailgate ./cmd/mailgate

# deb builds the Debian package bin/mailgate_<version>_<arch>.deb with
# nfpm (cmd/mailgate/dist/nfpm.yaml), run through the go command at a fixed
# version so that nothing needs installing: a static binary, the manual
# pages it prints, the unit, the default config (examples/debian.toml) and
# the maintainer scripts. DEBDIR puts the package elsewhere.
NFPM       ?= $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.48.0
DEBDIR     ?= bin
DEB_VERSION ?= 0.1.0~git$(shell git log -1 --format=%cd --date=format:%Y%m%d%H%M%S 2>/dev/null).$(shell git rev-parse --short=12 HEAD 2>/dev/null)
deb:
	rm -rf bin/deb && mkdir -p bin/deb/man bin/deb/doc $(DEBDIR)
	CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=auto -ldflags "$(LDFLAGS)" -o bin/deb/mailgate ./cmd/mailgate
	bin/deb/mailgate man 8 | gzip -9n > bin/deb/man/mailgate.8.gz
	bin/deb/mailgate man 5 | gzip -9n > bin/deb/man/mailgate.toml.5.gz
	for f in stages/*/README.md; do mkdir -p bin/deb/doc/$$(dirname $$f) && cp $$f bin/deb/doc/$$f; done
	VERSION="$(DEB_VERSION)" ARCH="$$($(GO) env GOARCH)" $(NFPM) package -f cmd/mailgate/dist/nfpm.yaml -p deb -t $(DEBDIR)/

# deps installs the Debian packages the integration tests talk to (real
# parts, not mocks) when they are missing: as root through apt-get (as on
# CI); otherwise it names the packages to install. Each entry is
# command:package. Debian keeps PostgreSQL's server programs out of PATH,
# in /usr/lib/postgresql/<version>/bin, where state/pgtest finds
# them: the check looks there too.
deps:
	@missing=""; \
	for c in swaks:swaks smtp-sink:postfix clamd:clamav-daemon clamav-milter:clamav-milter opendkim:opendkim opendkim-genkey:opendkim-tools spamd:spamd xmllint:libxml2-utils redis-server:redis-server postgres:postgresql chromium:chromium man:man-db; do \
		bin=$${c%%:*}; pkg=$${c##*:}; \
		PATH="$$PATH:/usr/sbin:/sbin$$(for d in /usr/lib/postgresql/*/bin; do printf ':%s' "$$d"; done)" command -v $$bin >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing:$$missing"; \
			export DEBIAN_FRONTEND=noninteractive; \
			echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; \
			apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $$missing >/dev/null || exit 1; \
		else \
			echo "tests need these Debian packages:$$missing (apt-get install$$missing)"; \
		fi; \
	fi

# Modules of their own in the tree, each vetted and tested in its own
# directory: the example third-party plugin (built against this checkout
# through a replace, as its author would) and the patched go-smtp
# (third_party/go-smtp/PATCHES.md).
MODULES ?= examples/plugins/exeblock third_party/go-smtp

vet:
	$(GO) vet $(PKGS)
	@for m in $(MODULES); do (cd $$m && $(GO) vet ./...) || exit 1; done
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }

test: deps vet
	PATH="$$PATH:/usr/sbin:/sbin" $(GO) test -race -timeout 20m $(PKGS)
	@for m in $(MODULES); do echo "test $$m (own module)"; (cd $$m && $(GO) test -race ./...) || exit 1; done
	$(MAKE) fuzz

# Each fuzz target runs briefly; crashers found are kept in testdata/fuzz
# and replayed by every later `go test`. The budget is a count of inputs,
# not a duration: a time budget makes `go test -fuzz` fail with "context
# deadline exceeded" and no crasher when the machine is loaded
# (golang/go#75804), and a count does the same work on any machine.
# FUZZTIME_FOR gives a target whose inputs cost more a budget of its own
# (name=count): FuzzSMTPSession runs a whole SMTP session over TCP per
# input. The minimization of each new input is a count too: by default it
# may take 60s of wall time, and on a loaded machine one target spent
# most of 100s minimizing.
FUZZTIME ?= 20000x
FUZZTIME_FOR ?= FuzzSMTPSession=5000x
FUZZMINIMIZE ?= 100x
fuzz:
	@grep -rl --include='*_test.go' '^func Fuzz' . | while read f; do \
		dir=$$(dirname $$f); \
		for fn in $$(grep -o '^func Fuzz[A-Za-z0-9_]*' $$f | sed 's/^func //'); do \
			n=$(FUZZTIME); \
			for o in $(FUZZTIME_FOR); do [ "$${o%%=*}" = "$$fn" ] && n=$${o#*=}; done; \
			echo "fuzz $$dir $$fn $$n"; \
			(cd $$dir && $(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $$n -fuzzminimizetime $(FUZZMINIMIZE) .) || exit 1; \
		done; \
	done

# bench measures, as root: first the packages' Go benchmarks, briefly
# (BENCHTIME iterations each), then cmd/mailbench's table of the same load
# against smtp-sink, Postfix and mailgate on loopback (see BENCHMARKS.md).
# MAILBENCH_FLAGS passes flags to it: "-n 2000" for a quick run, "-write"
# to put the table into BENCHMARKS.md. Every mailgate process of the run
# (gateway and plugins) leaves a CPU profile under BENCHPROFILE/<line>/
# for `go tool pprof`; BENCHPROFILE= turns that off.
BENCHTIME ?= 100x
MAILBENCH_FLAGS ?=
BENCHPROFILE ?= bin/bench-profiles
bench: deps
	$(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) $(PKGS)
	PATH="$$PATH:/usr/sbin:/sbin" $(GO) run ./cmd/mailbench $(if $(BENCHPROFILE),-profile $(BENCHPROFILE)) $(MAILBENCH_FLAGS)

clean:
	rm -rf bin
