#!/usr/bin/env bash
# Install what forkvm's build and tests need on a fresh Debian machine:
# a C compiler with static glibc (test programs are built with gcc -static).
# Go modules come through the module proxy when `go` first builds.
set -euo pipefail
need=()
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
if ! command -v gcc >/dev/null || ! echo 'int main(void){return 0;}' | gcc -static -x c - -o "$probe/a" 2>/dev/null; then
	need+=(gcc libc6-dev)
fi
command -v dpkg-deb >/dev/null || need+=(dpkg)
if [ ${#need[@]} -gt 0 ]; then
	echo "forkvm deps: installing ${need[*]}"
	if [ "$(id -u)" != 0 ]; then
		echo "forkvm deps: need root to install ${need[*]} (or install them yourself)" >&2
		exit 1
	fi
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ ! -c /dev/kvm ]; then
	echo "forkvm deps: warning: /dev/kvm is missing; forkvm needs KVM" >&2
fi
