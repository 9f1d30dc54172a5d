#!/usr/bin/env bash
# Build the worker image without Docker: a Debian bookworm root made by mmdebstrap, with
# the project (as committed at HEAD) and its locked dependencies (requirements.lock,
# wheels checked by hash) in a venv at /opt/stsmigrate, assembled into an OCI image
# layout by umoci. `make image` runs it as root.
#
#   deploy/image/build.sh OUT    -> OUT/oci (OCI layout, tag $TAG), OUT/image.digest
#
# Reproducible: every time and mtime is SOURCE_DATE_EPOCH (HEAD's commit time by
# default, mtimes clamped to it), the layers are tars sorted by name with numeric
# owners, the image config and history carry that time. Two builds of one commit give
# one digest as long as Debian's mirror serves the same package versions (a point
# release or security update changes the base layer: pin a snapshot mirror with
# MIRROR=... to rebuild an old image bit for bit).
set -euo pipefail

OUT=$(realpath -m "${1:?usage: build.sh OUT}")
REPO=$(cd "$(dirname "$0")/../.." && pwd)
TAG=${TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/pyproject.toml")}
SUITE=bookworm
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY=${SECURITY:-http://deb.debian.org/debian-security}
PYTHON=${PYTHON:-python3}
CACHE=${STSMIGRATE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/statefulset-migrator}/wheels
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$REPO" log -1 --format=%ct HEAD)}
export LC_ALL=C TZ=UTC
CREATED=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
REVISION=$(git -C "$REPO" rev-parse HEAD)

for tool in mmdebstrap umoci tar git; do
  command -v "$tool" >/dev/null || { echo "error: $tool is missing (make image installs it)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "error: mmdebstrap --mode=root needs root" >&2; exit 1; }

work="$OUT/work"
rm -rf "$work" "$OUT/oci" "$OUT/image.digest"
mkdir -p "$work/stage" "$CACHE"

# 1. The locked wheels, for the image's platform, each checked against its hash.
"$PYTHON" -m pip download --quiet --no-deps --require-hashes --only-binary=:all: \
  --platform=manylinux_2_17_x86_64 --platform=manylinux2014_x86_64 \
  $(for m in $(seq 36 -1 18); do echo --platform=manylinux_2_${m}_x86_64; done) \
  --python-version=3.11.2 --implementation=cp --abi=cp311 --abi=abi3 --abi=none \
  -r "$REPO/deploy/image/requirements.lock" -d "$CACHE"
mkdir -p "$work/stage/wheels"
# Only the locked ones (the cache may hold older versions too).
sed -n 's/^\([^#=][^=]*\)==\([^ ]*\) .*/\1 \2/p' "$REPO/deploy/image/requirements.lock" |
  while read -r name version; do
    file=$(ls "$CACHE" | grep -i -E "^${name//[-_.]/[-_.]}-${version}-" | head -1)
    [ -n "$file" ] || { echo "error: no wheel for $name $version" >&2; exit 1; }
    cp "$CACHE/$file" "$work/stage/wheels/"
  done
cp "$REPO/deploy/image/requirements.lock" "$work/stage/"
# 2. The project exactly as committed (a dirty worktree does not leak in).
git -C "$REPO" archive --format=tar --prefix=src/ HEAD | tar -x -C "$work/stage"

# 3. The root: Debian's python3 and CA certificates, no apt, no docs, a nonroot user
# (uid/gid 65532, as distroless images have), the venv built inside it with its own
# Python (pip compiles checked-hash .pyc files since SOURCE_DATE_EPOCH is set).
install='set -eu
python3 -m venv /opt/stsmigrate
/opt/stsmigrate/bin/pip install --quiet --no-index --no-cache-dir --find-links /stage/wheels \
  --require-hashes -r /stage/requirements.lock
/opt/stsmigrate/bin/pip install --quiet --no-index --no-cache-dir --no-deps \
  --no-build-isolation /stage/src
/opt/stsmigrate/bin/pip uninstall --quiet --yes setuptools pip
rm -rf /opt/stsmigrate/lib/python3.11/site-packages/_distutils_hack /opt/stsmigrate/share
/opt/stsmigrate/bin/python -c "import worker, stsmigrate.cli"'
mmdebstrap --quiet --mode=root --variant=essential --format=directory \
  --include=python3,python3-venv,ca-certificates \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
  --customize-hook='echo "nonroot:x:65532:65532:nonroot:/home/nonroot:/usr/sbin/nologin" >> "$1/etc/passwd"' \
  --customize-hook='echo "nonroot:x:65532:" >> "$1/etc/group"' \
  --customize-hook='mkdir -p "$1/home/nonroot" && chown 65532:65532 "$1/home/nonroot"' \
  --customize-hook="cp -a '$work/stage' \"\$1/stage\"" \
  --customize-hook="chroot \"\$1\" env -i PATH=/usr/bin:/bin HOME=/root LC_ALL=C.UTF-8 SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH PYTHONHASHSEED=0 sh -c '$install'" \
  --customize-hook='rm -rf "$1/stage" "$1"/var/cache/* "$1"/var/log/* "$1"/var/lib/apt/lists/* "$1"/tmp/*' \
  --customize-hook='rm -f "$1/etc/machine-id" "$1/var/lib/dbus/machine-id" "$1"/var/lib/dpkg/*-old "$1"/var/cache/ldconfig/aux-cache' \
  "$SUITE" "$work/root" \
  "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" "deb $SECURITY $SUITE-security main"
rm -rf "${work:?}/root/dev/"*

# 4. Two layers (the Debian root, then /opt/stsmigrate), deterministic tars.
layer() { # OUT.tar ARGS...
  local out=$1; shift
  tar --create --file="$out" --directory="$work/root" --sort=name --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    --mtime="@$SOURCE_DATE_EPOCH" --clamp-mtime --numeric-owner --no-acls --no-xattrs "$@"
}
layer "$work/base.tar" --exclude=./opt/stsmigrate .
layer "$work/app.tar" ./opt/stsmigrate

# 5. The OCI image: config and history at SOURCE_DATE_EPOCH.
oci="$OUT/oci"
umoci init --layout "$oci"
umoci new --image "$oci:$TAG"
umoci raw add-layer --image "$oci:$TAG" --history.created="$CREATED" \
  --history.created_by="mmdebstrap $SUITE: python3 python3-venv ca-certificates" "$work/base.tar"
umoci raw add-layer --image "$oci:$TAG" --history.created="$CREATED" \
  --history.created_by="pip install -r deploy/image/requirements.lock . (venv /opt/stsmigrate)" \
  "$work/app.tar"
umoci config --image "$oci:$TAG" --no-history --created="$CREATED" \
  --config.user=65532:65532 --config.workingdir=/home/nonroot \
  --config.env=PATH=/opt/stsmigrate/bin:/usr/local/bin:/usr/bin:/bin \
  --config.env=PYTHONUNBUFFERED=1 --config.env=PYTHONDONTWRITEBYTECODE=1 \
  --config.env=HOME=/home/nonroot \
  --config.entrypoint=/opt/stsmigrate/bin/python --config.entrypoint=-m \
  --config.entrypoint=worker \
  --config.label=org.opencontainers.image.title=statefulset-migrator \
  --config.label=org.opencontainers.image.version="$TAG" \
  --config.label=org.opencontainers.image.revision="$REVISION" \
  --config.label=org.opencontainers.image.created="$CREATED" \
  --config.label=org.opencontainers.image.licenses=Apache-2.0
umoci gc --layout "$oci"
rm -rf "$work"

# The image's digest is its manifest's, as a registry reports it after a push.
python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' \
  "$oci/index.json" > "$OUT/image.digest"
size=$(du -sb "$oci/blobs" | cut -f1)
echo "image $oci:$TAG $(cat "$OUT/image.digest") ($((size / 1024 / 1024)) MiB compressed)"
