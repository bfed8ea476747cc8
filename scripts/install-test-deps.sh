#!/usr/bin/env bash
# install-test-deps.sh installs what `make test` and `make lint` need and is
# missing:
#
#   - docker-registry (distribution v2) and skopeo, the Debian packages, which
#     the interop tests run against and compare with;
#   - staticcheck, crane and cosign, with `go install`, at the versions pinned below,
#     into GOBIN (or GOPATH/bin), which the Makefile puts first on PATH.
#
# It is idempotent and prints one line for each thing it installs, nothing
# when all is there. apt-get needs root, or sudo.
set -euo pipefail

# Pinned tool versions. Bump them here, and only here.
STATICCHECK_VERSION=v0.8.2 # honnef.co/go/tools; must support the Go release in go.mod
CRANE_VERSION=v0.22.1      # keep in step with go-containerregistry in go.mod
COSIGN_VERSION=v2.6.5     # the cosign CLI, for the signature interop tests

log() { echo "install-test-deps: $*"; }
die() { echo "install-test-deps: $*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

# quietly runs a command, showing its output only if it fails.
quietly() {
	local out
	out="$(mktemp)"
	if ! "$@" >"$out" 2>&1; then
		cat "$out" >&2
		rm -f "$out"
		die "failed: $*"
	fi
	rm -f "$out"
}

as_root() {
	if [[ "$(id -u)" -eq 0 ]]; then
		"$@"
	elif have sudo; then
		sudo "$@"
	else
		die "need root or sudo to run: $*"
	fi
}

# --- Debian packages ---------------------------------------------------------

# apt_install PACKAGE... installs the packages whose command is missing; each
# argument is COMMAND=PACKAGE.
apt_install() {
	local missing=() pair
	for pair in "$@"; do
		have "${pair%%=*}" || missing+=("${pair#*=}")
	done
	if ((${#missing[@]} == 0)); then
		return 0
	fi
	have apt-get || die "need ${missing[*]}, and there is no apt-get here: install them with your package manager"
	quietly as_root apt-get update -q
	quietly as_root env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -q --no-install-recommends "${missing[@]}"
	local p
	for p in "${missing[@]}"; do
		log "installed $p $(dpkg-query -W -f='${Version}' "$p")"
	done
}

apt_install docker-registry=docker-registry skopeo=skopeo

# --- Go tools ----------------------------------------------------------------

gobin="$(go env GOBIN)"
if [[ -z "$gobin" ]]; then
	gopath="$(go env GOPATH)"
	gobin="${gopath%%:*}/bin"
fi

# go_install BINARY PACKAGE VERSION installs PACKAGE@VERSION unless
# GOBIN/BINARY is already built from that version of its module.
go_install() {
	local bin="$1" pkg="$2" version="$3" have_version=""
	if [[ -x "$gobin/$bin" ]]; then
		have_version="$(go version -m "$gobin/$bin" 2>/dev/null | awk '$1 == "mod" { print $3; exit }')"
	fi
	if [[ "$have_version" == "$version" ]]; then
		return 0
	fi
	quietly go install "$pkg@$version"
	log "installed $bin $version${have_version:+ (was $have_version)}"
}

go_install staticcheck honnef.co/go/tools/cmd/staticcheck "$STATICCHECK_VERSION"
go_install crane github.com/google/go-containerregistry/cmd/crane "$CRANE_VERSION"
go_install cosign github.com/sigstore/cosign/v2/cmd/cosign "$COSIGN_VERSION"
