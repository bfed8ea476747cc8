#!/usr/bin/env bash
# bench.sh benchmarks ferry's copy, serve, mirror, bundle and pull-through
# cache against crane, regctl, regsync, skopeo and docker-registry: it builds
# bin/ferry, installs the peers it can, and runs the harness in
# scripts/bench/ with the arguments given (see docs/benchmarks.md, or
# `bash scripts/bench.sh -h`). `make bench BENCHFLAGS=-quick` runs it too.
#
#   - crane, regctl and regsync are installed with `go install`, at the
#     versions pinned below, into GOBIN (or GOPATH/bin), when missing or
#     different;
#   - skopeo and docker-registry are used when they are installed (apt-get
#     install skopeo docker-registry): this script installs no system
#     packages;
#   - a tool that is missing, or that fails to install, is reported as "not
#     installed" in the table; a ferry that does not build, as "not built".
#
# Everything the harness starts listens on 127.0.0.1 and dies with it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Pinned peer versions. Bump them here, and only here.
CRANE_VERSION=v0.22.1  # keep in step with go-containerregistry in go.mod
REGCTL_VERSION=v0.11.7 # github.com/regclient/regclient: regctl and regsync

log() { echo "bench.sh: $*" >&2; }

gobin="$(go env GOBIN)"
if [[ -z "$gobin" ]]; then
	gopath="$(go env GOPATH)"
	gobin="${gopath%%:*}/bin"
fi
export PATH="$gobin:$PATH"

# go_install BINARY PACKAGE VERSION installs PACKAGE@VERSION unless
# GOBIN/BINARY is already built from that version of its module. A failure
# is reported, not fatal: the table will say the tool is not installed.
go_install() {
	local bin="$1" pkg="$2" version="$3" have_version="" out
	if [[ -x "$gobin/$bin" ]]; then
		have_version="$(go version -m "$gobin/$bin" 2>/dev/null | awk '$1 == "mod" { print $3; exit }')"
	fi
	if [[ "$have_version" == "$version" ]]; then
		return 0
	fi
	out="$(mktemp)"
	if go install "$pkg@$version" >"$out" 2>&1; then
		log "installed $bin $version${have_version:+ (was $have_version)}"
	else
		log "could not install $bin $version:"
		cat "$out" >&2
	fi
	rm -f "$out"
}

go_install crane github.com/google/go-containerregistry/cmd/crane "$CRANE_VERSION"
go_install regctl github.com/regclient/regclient/cmd/regctl "$REGCTL_VERSION"
go_install regsync github.com/regclient/regclient/cmd/regsync "$REGCTL_VERSION"
for pkg in skopeo docker-registry; do
	if ! command -v "$pkg" >/dev/null 2>&1; then
		log "$pkg is not installed (apt-get install $pkg): it is left out"
	fi
done

args=()
if ! make --no-print-directory build >&2; then
	log "make build failed: ferry is reported as not built"
	args+=(-ferry=)
fi

export BENCH_COMMAND="bash scripts/bench.sh${*:+ $*}"
exec go run ./scripts/bench ${args[@]+"${args[@]}"} "$@"
