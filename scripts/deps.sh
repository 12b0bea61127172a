#!/bin/sh
# Install the Debian packages cloison needs to build, test and run.
# Idempotent: asks dpkg first and only calls apt-get for what is missing.
set -eu

PKGS="
build-essential meson ninja-build pkg-config clang
libjansson-dev libmicrohttpd-dev libcurl4-openssl-dev liburing-dev
libmnl-dev libnftables-dev nftables dnsmasq-base libzstd-dev uuid-dev
libseccomp-dev libssl-dev libcmocka-dev
python3 python3-pytest python3-pytest-timeout
qemu-utils qemu-system-x86 acpica-tools
iproute2 iputils-ping busybox-static cpio gzip
lz4 xz-utils
libvirt-daemon-system libvirt-clients util-linux acl
"

missing=""
for p in $PKGS; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done

if [ -z "$missing" ]; then
	exit 0
fi

echo "deps.sh: installing:$missing"
if [ "$(id -u)" -ne 0 ]; then
	SUDO=sudo
else
	SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
