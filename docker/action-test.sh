#!/usr/bin/env bash
# Build the Action's image and run it the way the GitHub runner does, against a fixture repository
# and the fake GitHub (tests/fakegithub.py), through tests/container/test_action_container.py.
#
#   docker/action-test.sh          build the image, then run the container tests
#   docker/action-test.sh build    build the image only
#
# With EDGEGATE_DOCKER=system it uses the machine's Docker daemon as is (GitHub runners). Otherwise
# (this machine: no daemon, no Docker Hub, no BuildKit) it starts a private dockerd that leaves the
# host network alone, imports a debootstrapped Debian bookworm as debian:bookworm-slim, and stops
# the daemon on exit. Layers are cached under $EDGEGATE_DOCKER_CACHE between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
IMAGE=${EDGEGATE_IMAGE:-edgegate-action:test}
PY=${PY:-$ROOT/.venv/bin/python}
CACHE=${EDGEGATE_DOCKER_CACHE:-$HOME/.cache/edgegate-docker}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
what=${1:-all}
t0=$(date +%s)
say() { echo "[action-test $(( $(date +%s) - t0 ))s] $*"; }

if [ "${EDGEGATE_DOCKER:-private}" != system ]; then
    command -v dockerd >/dev/null && command -v debootstrap >/dev/null || {
        echo "needs dockerd and debootstrap: apt-get install -y --no-install-recommends docker.io debootstrap" >&2
        exit 2; }
    mkdir -p "$CACHE"
    D=$(mktemp -d /tmp/egd.XXXXXX)         # short: the daemon's socket paths must stay short
    cleanup() {
        if [ -f "$D/dockerd.pid" ]; then
            kill "$(cat "$D/dockerd.pid")" 2>/dev/null || true
            for _ in $(seq 50); do [ -e "/proc/$(cat "$D/dockerd.pid" 2>/dev/null)" ] || break; sleep 0.2; done
        fi
        umount "$D/exec/netns/default" 2>/dev/null || true
        rm -rf "$D"
    }
    trap cleanup EXIT
    # never the default flags: they create a bridge, change the firewall and turn on forwarding
    dockerd --data-root "$CACHE/data" --exec-root "$D/exec" --pidfile "$D/dockerd.pid" \
        -H "unix://$D/docker.sock" --iptables=false --ip-forward=false --ip-masq=false \
        --bridge=none >"$D/dockerd.log" 2>&1 &
    export DOCKER_HOST="unix://$D/docker.sock"
    for _ in $(seq 100); do docker info >/dev/null 2>&1 && break; sleep 0.2; done
    docker info >/dev/null || { cat "$D/dockerd.log" >&2; exit 3; }
    say "private dockerd up"
    if ! docker image inspect debian:bookworm-slim >/dev/null 2>&1; then
        if [ ! -f "$CACHE/bookworm-minbase.tar" ]; then
            rm -rf "$CACHE/rootfs"
            debootstrap --variant=minbase bookworm "$CACHE/rootfs" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1
            tar -C "$CACHE/rootfs" -c . >"$CACHE/bookworm-minbase.tar"
            rm -rf "$CACHE/rootfs"
        fi
        # this machine's extra CA certificates go into the local base image only, never the repo
        R=$(mktemp -d /tmp/egroot.XXXXXX)
        tar -C "$R" -xf "$CACHE/bookworm-minbase.tar"
        mkdir -p "$R/usr/local/share/ca-certificates"
        cp /usr/local/share/ca-certificates/*.crt "$R/usr/local/share/ca-certificates/" 2>/dev/null || true
        tar -C "$R" -c . | docker import - debian:bookworm-slim >/dev/null
        rm -rf "$R"
        say "base image debian:bookworm-slim imported"
    fi
fi

build_args=()
wheel=$(ls /opt/wheels/torch-*+cpu-*.whl 2>/dev/null | head -1 || true)
if [ -n "$wheel" ] && [ -z "${TORCH_FROM_INDEX:-}" ]; then
    mkdir -p docker/wheels
    cp -u "$wheel" docker/wheels/
    build_args+=(--build-arg "TORCH_WHEEL=$(basename "$wheel")")
fi
say "building $IMAGE"
docker build --network host "${build_args[@]}" -f docker/Dockerfile -t "$IMAGE" .
say "built $IMAGE: $(docker image inspect -f '{{.Size}}' "$IMAGE") bytes"
[ "$what" = build ] && exit 0

EDGEGATE_CONTAINER_IMAGE=$IMAGE "$PY" -m pytest -q -p no:cacheprovider -m container tests/container "${@:2}"
say "done"
