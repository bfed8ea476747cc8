#!/usr/bin/env bash
# demo.sh runs ferry end to end, offline: it starts an ephemeral `ferry serve`
# on a free loopback port, pushes the demo image from testdata/demo (an OCI
# layout in this repository), and runs ferry's commands against it. Nothing
# leaves this machine. `make demo` builds bin/ferry and runs this.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

FERRY="${FERRY:-$PWD/bin/ferry}"
[[ -x "$FERRY" ]] || { echo "demo: $FERRY not found: run make build" >&2; exit 1; }

work="$(mktemp -d)"
serve_pid=""
cleanup() {
	if [[ -n "$serve_pid" ]] && kill -0 "$serve_pid" 2>/dev/null; then
		kill -TERM "$serve_pid" 2>/dev/null || true
		wait "$serve_pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

# Keep the user's own credentials and config out of it.
export HOME="$work/home" DOCKER_CONFIG="$work/docker" XDG_CONFIG_HOME="$work/config"
mkdir -p "$HOME"

bold=$'\033[1m' reset=$'\033[0m'
[[ -t 1 ]] || { bold="" reset=""; }
# step prints a command the way a user would type it, then runs it.
step() {
	printf '\n%s$ ferry %s%s\n' "$bold" "$*" "$reset"
	"$FERRY" "$@"
}

echo "Starting an ephemeral registry: ferry serve --addr 127.0.0.1:0"
"$FERRY" serve --addr 127.0.0.1:0 --log-level none >"$work/serve.out" 2>"$work/serve.err" &
serve_pid=$!
for _ in $(seq 100); do
	grep -q '^serving ' "$work/serve.out" 2>/dev/null && break
	kill -0 "$serve_pid" 2>/dev/null || { cat "$work/serve.err" >&2; exit 1; }
	sleep 0.1
done
url="$(awk '/^serving /{print $2; exit}' "$work/serve.out")"
[[ -n "$url" ]] || { echo "demo: ferry serve did not start" >&2; cat "$work/serve.err" >&2; exit 1; }
REG="${url#http://}"
cat "$work/serve.out"

# Push: the demo image is a two-platform index in an OCI layout.
step copy oci:testdata/demo:1.0 "$REG/demo/hello:1.0"

# Sign and verify, offline, with a key pair in cosign's format. The tag is
# resolved and its digest signed. The password is read from
# COSIGN_PASSWORD (this one is for the demo only).
export COSIGN_PASSWORD=demo-only-password
step key generate --output-prefix "$work/demo"
step sign --key "$work/demo.key" -a stage=demo "$REG/demo/hello:1.0"
step verify --key "$work/demo.pub" -a stage=demo "$REG/demo/hello:1.0"

# Look at it.
step inspect "$REG/demo/hello:1.0"
step inspect --platform linux/arm64 "$REG/demo/hello:1.0"
step inspect --digest "$REG/demo/hello:1.0"
digest="$("$FERRY" inspect --digest "$REG/demo/hello:1.0")"

# Copy within the registry (blobs are mounted, not moved), and one platform.
step copy -o json "$REG/demo/hello:1.0" "$REG/mirror/hello:1.0"
step copy --platform linux/amd64 "$REG/demo/hello:1.0" "$REG/mirror/hello:1.0-amd64"
step tags --digests "$REG/mirror/hello"

# Across an air gap: a bundle in parts (as for a FAT32 USB stick), with
# SHA256SUMS. On the far side it is verified (every part, every blob, the
# signature) before anything is imported; the import drops the source's
# registry host and writes a receipt for the next, differential, bundle.
mkdir -p "$work/usb"
step bundle create --split 8K -o "$work/usb/hello.tar" "$REG/demo/hello:1.0"
step bundle list "$work/usb/hello.tar"
step bundle verify --key "$work/demo.pub" "$work/usb/hello.tar"
step bundle import "$work/usb/hello.tar" --to "$REG/airgap"
got="$("$FERRY" inspect --digest "$REG/airgap/demo/hello:1.0")"
[[ "$got" == "$digest" ]] || { echo "demo: digest changed across the air gap: $got, want $digest" >&2; exit 1; }
# The signature crossed the air gap with the image.
step verify --key "$work/demo.pub" "$REG/airgap/demo/hello:1.0"
# The next bundle leaves out what the far side already holds.
step bundle create --since "$work/usb/hello.tar.receipt.json" -o "$work/update.tar" "$REG/demo/hello:1.0"

# Local garbage collection on a layout: drop a tag, reclaim its blobs.
step copy "$REG/demo/hello:1.0" "oci:$work/layout:1.0"
step copy "$REG/mirror/hello:1.0-amd64" "oci:$work/layout:amd64"
step gc --dry-run "oci:$work/layout"

# Mirror: a TOML config keeps repositories in step (docs/mirror-config.md).
# The plan first, then the run, then a rerun that finds nothing to copy.
cat >"$work/mirror.toml" <<EOF
# Every tag of demo/hello, all platforms, signatures along.
[[sync]]
from = "$REG/demo/hello"
to   = "$REG/mirror-all/hello"

# Only arm64, as an index that records its source, into an OCI layout.
[[sync]]
from = "$REG/demo/hello"
to   = "oci:$work/mirror-layout"
platforms = ["linux/arm64"]
EOF
printf '\n%s$ cat mirror.toml%s\n' "$bold" "$reset"
cat "$work/mirror.toml"
step mirror -c "$work/mirror.toml" --dry-run
step mirror -c "$work/mirror.toml"
step mirror -c "$work/mirror.toml" -o json | tee "$work/mirror-rerun.json"
grep -q '"copied": 0,' "$work/mirror-rerun.json" || { echo "demo: the mirror rerun copied something" >&2; exit 1; }
got="$("$FERRY" inspect --digest "$REG/mirror-all/hello:1.0")"
[[ "$got" == "$digest" ]] || { echo "demo: the mirror changed the digest: $got, want $digest" >&2; exit 1; }

echo
echo "Stopping the registry (SIGTERM: it drains and exits 0)."
kill -TERM "$serve_pid"
wait "$serve_pid"
serve_pid=""
echo "demo: every step succeeded; digest $digest survived the round trip."
