#!/usr/bin/env bash
# Make a Debian bookworm base image from Debian's own packages, for hosts that cannot pull one from a registry
# (air-gapped sites, or machines that reach only a Debian mirror): debootstrap --variant=minbase, then docker import.
#   scripts/make_debian_base.sh [IMAGE]     (default IMAGE: cnn-viz-base:bookworm)
# Needs root, debootstrap (apt-get install debootstrap) and a reachable Debian mirror: DEBIAN_MIRROR, default
# http://deb.debian.org/debian (the security suite comes from DEBIAN_SECURITY, default .../debian-security).
# The image is what debian:bookworm-slim is (minbase, apt lists removed); build with
#   docker build --build-arg BASE_IMAGE=cnn-viz-base:bookworm ...   (scripts/docker_build.sh does this by itself).
set -euo pipefail

image=${1:-cnn-viz-base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY:-${mirror%/debian}/debian-security}

if [[ $(id -u) -ne 0 ]]; then
  echo "make_debian_base: debootstrap needs root (run it with sudo)" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  echo "make_debian_base: debootstrap not found: apt-get install debootstrap" >&2
  exit 1
fi

root=$(mktemp -d "${TMPDIR:-/tmp}/debian-base.XXXXXX")
trap 'rm -rf "$root"' EXIT
echo "make_debian_base: debootstrap --variant=minbase bookworm from $mirror (a minute or two)" >&2
log=$(mktemp)
if ! debootstrap --variant=minbase bookworm "$root" "$mirror" >"$log" 2>&1; then
  tail -20 "$log" >&2
  echo "make_debian_base: debootstrap failed (whole log: $log)" >&2
  exit 1
fi
rm -f "$log"

cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
EOF
# As in Debian's own container images: no recommends, no apt caches or lists left behind in the layers.
cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
APT::Install-Recommends "false";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb "$root"/tmp/*
: >"$root/etc/hostname"
: >"$root/etc/resolv.conf"

tar --numeric-owner -C "$root" -c . | "${DOCKER:-docker}" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["bash"]' - "$image" >/dev/null
echo "make_debian_base: $image ($("${DOCKER:-docker}" image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))" >&2
