#!/usr/bin/env bash
# Build stand-ins for the upstream images that docker-compose.yml names, for machines that cannot
# pull images (CI here reaches only Debian's mirror and PyPI). Each stand-in is a small Debian
# bookworm image (debootstrap + docker import) that behaves like the upstream image as far as
# docker-compose.yml uses it, tagged with the upstream name.
#
# Safe on a developer's machine: an upstream image that can be pulled is pulled and used; one that
# exists and is NOT one of our stand-ins (a real, pulled image) is left alone. A stand-in is rebuilt only when its definition changed (the
# hash of its folder is kept in the image label skynet.standin).
#
# Usage: tests/compose/build_standins.sh            (build what is missing or stale; the Debian base
#                                                   only when a stand-in needs it)
#        SKYNET_STANDIN_FORCE=1 tests/compose/build_standins.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
standins="$here/standins"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
base_tag="skynet-standin/debian:bookworm"
ca_bundle="${SKYNET_STANDIN_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
nice_cmd=(nice -n 10)

log() { printf '[standins] %s\n' "$*" >&2; }

label_of() { docker image inspect --format '{{ index .Config.Labels "skynet.standin" }}' "$1" 2>/dev/null || true; }

exists() { docker image inspect "$1" >/dev/null 2>&1; }

hash_dir() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16); }

build_base() {
  local want
  # Bump base_recipe when the recipe below changes; the CA bundle's hash is part of the label too.
  local base_recipe=1
  want="base-$base_recipe-$(sha256sum "$ca_bundle" | cut -c1-12)"
  if exists "$base_tag" && [ "$(label_of "$base_tag")" = "$want" ] && [ -z "${SKYNET_STANDIN_FORCE:-}" ]; then
    return
  fi
  command -v debootstrap >/dev/null || { log "debootstrap is missing: apt-get install -y debootstrap"; exit 1; }
  local root
  root="$(mktemp -d /var/tmp/skynet-debootstrap.XXXXXX)"
  trap 'rm -rf "$root"' RETURN
  log "debootstrap bookworm into $root (a few minutes, once)"
  "${nice_cmd[@]}" debootstrap --variant=minbase --include=ca-certificates bookworm "$root" "$mirror" >&2
  # The host's CA bundle, so HTTPS (PyPI) works inside builds wherever the host's works.
  install -m 0644 "$ca_bundle" "$root/etc/ssl/certs/host-ca-bundle.crt"
  echo "deb $mirror bookworm main" > "$root/etc/apt/sources.list"
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' > "$root/etc/apt/apt.conf.d/90skynet"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  log "docker import $base_tag"
  tar -C "$root" -c . | docker import \
    --change "LABEL skynet.standin=$want" \
    --change "ENV SSL_CERT_FILE=/etc/ssl/certs/host-ca-bundle.crt" \
    --change "ENV PIP_CERT=/etc/ssl/certs/host-ca-bundle.crt" \
    --change "ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/host-ca-bundle.crt" \
    --change "ENV AWS_CA_BUNDLE=/etc/ssl/certs/host-ca-bundle.crt" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    - "$base_tag" >/dev/null
}

# stale <folder under standins/> <upstream tag>: succeeds when the stand-in must be (re)built.
stale() {
  local tag="$2" want current
  want="$1-$(hash_dir "$standins/$1")"
  current="$(label_of "$tag")"
  if exists "$tag" && [ -z "$current" ]; then
    log "$tag exists and is a real image: keeping it"
    return 1
  fi
  if [ "$current" = "$want" ] && [ -z "${SKYNET_STANDIN_FORCE:-}" ]; then
    log "$tag: stand-in up to date"
    return 1
  fi
  # Where the registry is reachable, the real image beats any stand-in.
  if [ -z "$current" ] && [ -z "${SKYNET_STANDIN_NO_PULL:-}" ] && timeout 600 docker pull -q "$tag" >/dev/null 2>&1; then
    log "$tag: pulled the real image"
    return 1
  fi
  return 0
}

# build_standin <folder under standins/> <upstream tag>
build_standin() {
  local dir="$standins/$1" tag="$2"
  log "building stand-in $tag from standins/$1"
  "${nice_cmd[@]}" docker build -q --label "skynet.standin=$1-$(hash_dir "$dir")" -t "$tag" "$dir" >/dev/null
}

docker info >/dev/null 2>&1 || { log "docker engine not reachable"; exit 1; }
# Order matters: the Python stand-in is the base of the S3 ones.
images=(
  "python python:3.12-slim"
  "rabbitmq rabbitmq:3.13-management"
  "postgres postgres:16"
  "minio minio/minio:latest"
  "mc minio/mc:latest"
  "sftp atmoz/sftp:latest"
)
todo=()
for pair in "${images[@]}"; do
  # shellcheck disable=SC2086
  if stale $pair; then todo+=("$pair"); fi
done
if [ "${1:-}" = "base" ] || [ ${#todo[@]} -gt 0 ]; then
  build_base
fi
for pair in "${todo[@]}"; do
  # shellcheck disable=SC2086
  build_standin $pair
done
log "stand-ins ready"
