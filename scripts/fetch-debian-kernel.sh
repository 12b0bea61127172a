#!/bin/bash
# Fetches Debian's cloud kernel (the image package linux-image-cloud-amd64
# depends on) with apt-get download, keeps its vmlinuz (a bzImage), makes a
# vmlinux from it by decompressing the payload the bzImage header points at,
# and builds a busybox initramfs from Debian's busybox-static whose init
# prints a marker and powers off. Everything is cached, so reruns are
# offline. Prints the cache directory on stdout.
set -euo pipefail

CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/cloison/debian-kernel
mkdir -p "$CACHE"
if [ -s "$CACHE/vmlinuz" ] && [ -s "$CACHE/vmlinux" ] && [ -s "$CACHE/initramfs.cpio.gz" ]; then
	echo "$CACHE"
	exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"

image_pkg() {
	apt-cache depends linux-image-cloud-amd64 2>/dev/null |
		awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}
pkg=$(image_pkg || true)
if [ -z "$pkg" ]; then
	apt-get update -qq >&2
	pkg=$(image_pkg)
fi
[ -n "$pkg" ] || { echo "fetch-debian-kernel: cannot resolve linux-image-cloud-amd64" >&2; exit 1; }
apt-get download "$pkg" >&2 || { apt-get update -qq >&2 && apt-get download "$pkg" >&2; }
dpkg-deb -x ./*.deb root
vmlinuz=$(ls root/boot/vmlinuz-* | head -1)
cp "$vmlinuz" vmlinuz

# vmlinux: the payload (payload_offset/payload_length in the setup header,
# relative to the protected-mode code) is the compressed kernel ELF, with
# the decompressed size appended in 4 bytes.
python3 - vmlinuz payload <<'PY'
import struct, sys
k = open(sys.argv[1], "rb").read()
setup_sects = k[0x1f1] or 4
off, length = struct.unpack_from("<II", k, 0x248)
start = (setup_sects + 1) * 512 + off
open(sys.argv[2], "wb").write(k[start:start + length - 4])
PY
case $(head -c 6 payload | od -An -tx1 | tr -d ' \n') in
	fd377a585a00) xz -dc --single-stream payload > vmlinux ;;
	28b52ffd*) zstd -dcq payload > vmlinux ;;
	1f8b*) gzip -dc payload > vmlinux ;;
	5d00*) xz -dc --format=lzma payload > vmlinux ;;
	02214c18*) lz4 -dcq payload > vmlinux ;; # LZ4 legacy frame (Debian's choice)
	*) echo "fetch-debian-kernel: unknown payload compression" >&2; exit 1 ;;
esac
head -c 4 vmlinux | grep -q ELF || { echo "fetch-debian-kernel: payload is not an ELF" >&2; exit 1; }

# A busybox initramfs whose init says so and powers off.
BB=/bin/busybox # from busybox-static (scripts/deps.sh), statically linked
mkdir -p initramfs/bin initramfs/proc initramfs/sys initramfs/dev
cp "$BB" initramfs/bin/busybox
cat > initramfs/init <<'INIT'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs dev /dev 2>/dev/null
echo "RESULT initramfs_init=ok"
echo "RESULT initramfs_cpus=$(/bin/busybox grep -c ^processor /proc/cpuinfo)"
/bin/busybox poweroff -f
INIT
chmod +x initramfs/init
(cd initramfs && find . | cpio -o -H newc --quiet | gzip -9) > initramfs.cpio.gz

mv vmlinuz vmlinux initramfs.cpio.gz "$CACHE"/
echo "$pkg" > "$CACHE/package"
echo "$CACHE"
