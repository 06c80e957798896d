#!/usr/bin/env bash
# Builds the component images from docker/Dockerfile: what `make images` runs (docker/README.md).
#
#   docker/build.sh        tags xdc:<version>-cpu and xdc:<version>-gpu, <version> from pyproject.toml
#
# Settings, each optional, from the environment (or make's command line, `make images FLAVOURS=cpu`):
#   FLAVOURS      "cpu gpu" (the default), or one of them
#   REGISTRY      also tag REGISTRY/xdc:<version>-<flavour>, e.g. ghcr.io/xdc-project
#   COMMIT        also tag <version>-<flavour>-<COMMIT> (the images workflow gives the commit's sha)
#   PUSH=1        push the REGISTRY tags (log in to the registry first)
#   BASE          auto (the default): docker/base.Dockerfile's base if it can be pulled, else a local
#                 Debian base; upstream: that base or fail; debian: the local Debian base
#   ENGINE        buildah (the default where installed) or docker
#   PULL_TIMEOUT  seconds to wait for the base to pull (default 120)
#   BASE_ONLY=1   resolve the base as BASE says (pulled, or the local Debian base), print it, build nothing
#   PIP_CERT      a CA bundle for pip in the build (default: the host's PIP_CERT or SSL_CERT_FILE,
#                 which a machine behind a TLS-inspecting proxy sets); none: pip's own
#
# The local Debian base is for machines that cannot pull from Docker Hub (CI, sandboxes): the same
# Debian release as the upstream base and its python3, made with mmdebstrap from the Debian mirror, once
# (kept as localhost/xdc-base:<release>). buildah runs as root (through sudo otherwise) with
# --isolation chroot, so it needs no daemon and no user namespaces; STORAGE_DRIVER=vfs where
# its default (overlay) cannot mount, e.g. inside a container.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "build.sh: $*" >&2; }
die() { say "$*"; exit 1; }

FLAVOURS=${FLAVOURS:-cpu gpu}
BASE=${BASE:-auto}
PULL_TIMEOUT=${PULL_TIMEOUT:-120}
ENGINE=${ENGINE:-$(command -v buildah >/dev/null && echo buildah || echo docker)}
for flavour in $FLAVOURS; do
    case $flavour in cpu|gpu) ;; *) die "FLAVOURS: $flavour is neither cpu nor gpu" ;; esac
done
[ "${PUSH:-}" != 1 ] || [ -n "${REGISTRY:-}" ] || die "PUSH=1 needs REGISTRY"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n1)
[ -n "$version" ] || die "no version = \"...\" line in pyproject.toml"
# The pinned upstream base (docker/base.Dockerfile says it, once), name:tag@sha256:digest; its tag
# ends in the Debian release, e.g. trixie. Pulled by the digest: the tag only says what it was.
base_image=$(sed -n 's/^FROM //p' docker/base.Dockerfile)
base_tag=${base_image%%@*}
release=${base_tag##*-}
[[ $release =~ ^[a-z]+$ ]] || die "docker/base.Dockerfile: FROM $base_image: its tag does not end in a Debian release (e.g. -trixie)"
local_base=localhost/xdc-base:$release
tmp=""  # the Debian base's rootfs while it is made
trap '[ -z "$tmp" ] || "${sudo[@]}" rm -rf "$tmp"' EXIT

sudo=(); [ "$(id -u)" = 0 ] || sudo=(sudo --preserve-env=STORAGE_DRIVER)
case $ENGINE in
    buildah) cmd=("${sudo[@]}" buildah)
             build() { "${cmd[@]}" build --isolation chroot --layers --force-rm "$@"; }  # --force-rm: no container left by a failed step
             have_image() { "${cmd[@]}" inspect --type image "$1" >/dev/null 2>&1; } ;;
    docker)  cmd=(docker)
             build() { DOCKER_BUILDKIT=1 docker build "$@"; }  # BuildKit: RUN --mount=type=cache
             have_image() { docker image inspect "$1" >/dev/null 2>&1; } ;;
    *) die "ENGINE=$ENGINE: use buildah or docker" ;;
esac
command -v "$ENGINE" >/dev/null || die "$ENGINE is not installed (Debian/Ubuntu: apt-get install buildah)"

# buildah resolves no short names without a prompt: python:X -> docker.io/library/python:X
qualified() {
    local first=${1%%/*}
    if [[ $1 != */* ]]; then echo "docker.io/library/$1"
    elif [[ $first != *.* && $first != *:* && $first != localhost ]]; then echo "docker.io/$1"
    else echo "$1"; fi
}

pull() {  # prints the error's last line when the pull fails
    local err rc=0
    have_image "$1" && return 0
    err=$(timeout "$PULL_TIMEOUT" "${cmd[@]}" pull -q "$1" 2>&1 >/dev/null) || rc=$?
    [ "$rc" = 0 ] && return 0
    if [ "$rc" = 124 ]; then echo "no answer within $PULL_TIMEOUT s"; else echo "${err##*$'\n'}"; fi
    return 1
}

debian_base() {
    if have_image "$local_base"; then say "using $local_base (already built)"; return; fi
    command -v mmdebstrap >/dev/null || die "mmdebstrap is not installed (apt-get install mmdebstrap)"
    local keyring=()
    tmp=$(mktemp -d)
    # a non-Debian host (Ubuntu) has Debian's keys only in this package's keyring
    [ -e /usr/share/keyrings/debian-archive-keyring.gpg ] && keyring=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)
    say "making $local_base with mmdebstrap (Debian $release: python3, venv, useradd)"
    "${sudo[@]}" mmdebstrap --quiet --variant=minbase "${keyring[@]}" \
        --include=python3,python3-venv,passwd,ca-certificates "$release" "$tmp/rootfs.tar"
    printf 'FROM scratch\nADD rootfs.tar /\nCMD ["/bin/bash"]\n' >"$tmp/Dockerfile"
    build -q -t "$local_base" "$tmp" >/dev/null
    "${sudo[@]}" rm -rf "$tmp"
}

case $BASE in
    upstream|auto)
        if [ "$ENGINE" = buildah ]; then from=$(qualified "$base_image"); else from=$base_image; fi
        if why=$(pull "$from"); then :
        elif [ "$BASE" = upstream ]; then die "cannot pull $from: $why"
        else
            say "cannot pull $from ($why): building on a local Debian $release base instead"
            debian_base; from=$local_base
        fi ;;
    debian) debian_base; from=$local_base ;;
    *) die "BASE=$BASE: use auto, upstream or debian" ;;
esac

if [ "${BASE_ONLY:-}" = 1 ]; then echo "$from"; exit 0; fi

# pip's CA bundle, as a build secret (not part of the image or of its layers' cache keys)
ca=${PIP_CERT:-${SSL_CERT_FILE:-}}
secret=(); [ -z "$ca" ] || secret=(--secret "id=pip-ca,src=$ca")

pushed=()
for flavour in $FLAVOURS; do
    tags=("xdc:$version-$flavour")
    [ -n "${COMMIT:-}" ] && tags+=("xdc:$version-$flavour-$COMMIT")
    if [ -n "${REGISTRY:-}" ]; then
        for t in "${tags[@]}"; do tags+=("${REGISTRY%/}/$t"); done
    fi
    say "building ${tags[0]} on $from"
    start=$SECONDS
    build -f docker/Dockerfile --build-arg "BASE_IMAGE=$from" --build-arg "XDC_EXTRAS=$flavour,pipelines,storage" \
        "${secret[@]}" "${tags[@]/#/--tag=}" .
    say "built ${tags[*]} in $((SECONDS - start)) s, $("${cmd[@]}" images --format '{{.Size}}' "${tags[0]}" | head -n1)"
    if [ "${PUSH:-}" = 1 ]; then
        for t in "${tags[@]}"; do
            if [[ $t == "${REGISTRY%/}/"* ]]; then "${cmd[@]}" push "$t"; pushed+=("$t"); fi
        done
    fi
done
[ "${#pushed[@]}" = 0 ] || say "pushed ${pushed[*]}"
