#!/bin/bash
# Fetches Debian's cloud kernel (the image package linux-image-cloud-amd64
# depends on) with apt-get download, keeps its vmlinuz (a bzImage), makes a
# vmlinux from it by decompressing the payload the bzImage header points at,
# and builds a busybox initramfs from Debian's busybox-static with the
# kernel's virtio modules, whose init (below) loads them, reports the first
# virtio disk's marker and brings the first NIC up, then powers off (or,
# with cloison.agent, runs cloison-agent, built static from guest-agent/,
# until the host asks it to shut down).
# Everything is cached, so reruns are offline. Prints the cache directory.
set -euo pipefail

CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/cloison/debian-kernel
# Bumped whenever the initramfs changes, so a cache from before is rebuilt.
INITRAMFS_VERSION=4
TOP=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$CACHE"
if [ -s "$CACHE/vmlinuz" ] && [ -s "$CACHE/vmlinux" ] && [ -s "$CACHE/initramfs.cpio.gz" ] &&
	[ "$(cat "$CACHE/initramfs.version" 2>/dev/null)" = "$INITRAMFS_VERSION" ]; then
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

# A busybox initramfs with the virtio modules (Debian builds them as
# modules), in dependency order: read from each module's own "depends="
# field, as there is no depmod output in the package.
BB=/bin/busybox # from busybox-static (scripts/deps.sh), statically linked
mkdir -p initramfs/bin initramfs/proc initramfs/sys initramfs/dev initramfs/lib/modules
cp "$BB" initramfs/bin/busybox
ln -s busybox initramfs/bin/sh # the agent's shutdown command runs through system()
mkdir -p initramfs/etc
printf 'PRETTY_NAME="Debian GNU/Linux 12 (cloison test initramfs)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n' > initramfs/etc/os-release
python3 - root/lib/modules initramfs/lib/modules <<'PY'
import os, re, shutil, sys
src, dst = sys.argv[1], sys.argv[2]
want = ["virtio_pci", "virtio_blk", "virtio_net", "virtio-rng", "virtio_console",
        "vmw_vsock_virtio_transport", "virtio_balloon"]
found = {}
for top, _, files in os.walk(src):
    for f in files:
        if f.endswith(".ko"):
            found[f[:-3].replace("-", "_")] = os.path.join(top, f)
order = []
def add(name):
    key = name.replace("-", "_")
    if key in order:
        return
    if key not in found:
        sys.exit("fetch-debian-kernel: module %s is not in the package" % name)
    data = open(found[key], "rb").read()
    m = re.search(rb"depends=([^\0]*)\0", data)
    for dep in (m.group(1).decode().split(",") if m and m.group(1) else []):
        add(dep)
    order.append(key)
for w in want:
    add(w)
with open(os.path.join(dst, "order"), "w") as f:
    for key in order:
        shutil.copy(found[key], os.path.join(dst, key + ".ko"))
        f.write(key + "\n")
PY
# The integration services' agent, static: the initramfs has no libc.
gcc -static -O2 -D_GNU_SOURCE -I"$TOP/src" -I"$TOP/guest-agent" -o initramfs/bin/cloison-agent \
	"$TOP/guest-agent/main.c" "$TOP/guest-agent/agent.c" "$TOP/guest-agent/sha256.c" >&2
cat > initramfs/init <<'INIT'
#!/bin/busybox sh
# cloison's test init. Words on the kernel command line:
#   cloison.ip=ADDR/PREFIX  address for the first NIC
#   cloison.peer=ADDR       ping it once the link is up
#   cloison.agent           run cloison-agent at the end instead of powering
#                           off: the host's shutdown request powers off
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev 2>/dev/null
echo "RESULT initramfs_init=ok"
echo "RESULT initramfs_cpus=$($B grep -c ^processor /proc/cpuinfo)"
for m in $($B cat /lib/modules/order); do
	$B insmod /lib/modules/$m.ko || echo "RESULT insmod_failed=$m"
done
ip= peer= agent=
for w in $($B cat /proc/cmdline); do
	case $w in
	cloison.ip=*) ip=${w#cloison.ip=} ;;
	cloison.peer=*) peer=${w#cloison.peer=} ;;
	cloison.agent) agent=1 ;;
	esac
done
# The first virtio disk: its first sector holds a text marker.
n=0
while [ ! -b /dev/vda ] && [ $n -lt 50 ]; do $B sleep 0.1; n=$((n + 1)); done
if [ -b /dev/vda ]; then
	echo "RESULT disk_sectors=$($B cat /sys/block/vda/size)"
	echo "RESULT disk_marker=$($B dd if=/dev/vda bs=512 count=1 2>/dev/null | $B tr -dc 'a-zA-Z0-9_.-')"
else
	echo "RESULT disk=none"
fi
# The first NIC other than lo.
nic=
for d in /sys/class/net/*; do
	[ "${d##*/}" = lo ] || { nic=${d##*/}; break; }
done
if [ -n "$nic" ]; then
	echo "RESULT nic=$nic"
	echo "RESULT nic_driver=$($B basename "$($B readlink /sys/class/net/$nic/device/driver)")"
	echo "RESULT nic_mac=$($B cat /sys/class/net/$nic/address)"
	$B ip link set "$nic" up
	n=0
	while [ "$($B cat /sys/class/net/$nic/operstate)" != up ] && [ $n -lt 50 ]; do
		$B sleep 0.1; n=$((n + 1))
	done
	echo "RESULT nic_operstate=$($B cat /sys/class/net/$nic/operstate)"
	if [ -n "$ip" ]; then
		$B ip addr add "$ip" dev "$nic"
		if [ -n "$peer" ]; then
			if $B ping -c 1 -W 5 "$peer" >/dev/null 2>&1; then
				echo "RESULT ping=ok"
			else
				echo "RESULT ping=failed"
			fi
		fi
	fi
else
	echo "RESULT nic=none"
fi
# Linux's balloon driver, when the VM has the device (dynamic memory).
for v in /sys/bus/virtio/drivers/virtio_balloon/virtio*; do
	[ -e "$v" ] && echo "RESULT balloon_driver=virtio_balloon"
done
echo "RESULT initramfs_done=ok"
if [ -n "$agent" ]; then
	$B mkdir -p /run/kvp
	$B hostname cloison-deb
	/bin/cloison-agent --kvp-dir /run/kvp --shutdown-command "$B poweroff -f" &
	echo "RESULT agent_started=$!"
	# what the host sets (vm kvp set) arrives as files: each shown once
	$B mkdir -p /run/seen
	while :; do
		for f in /run/kvp/*; do
			k=${f##*/}
			case $k in *.tmp) continue ;; esac # the agent writes KEY.tmp, then renames
			[ -f "$f" ] && [ ! -e "/run/seen/$k" ] || continue
			echo "RESULT host_kvp=$k=$($B cat "$f")"
			$B touch "/run/seen/$k"
		done
		$B sleep 0.5
	done
fi
$B poweroff -f
INIT
chmod +x initramfs/init
(cd initramfs && find . | cpio -o -H newc --quiet | gzip -9) > initramfs.cpio.gz

mv vmlinuz vmlinux initramfs.cpio.gz "$CACHE"/
echo "$pkg" > "$CACHE/package"
echo "$INITRAMFS_VERSION" > "$CACHE/initramfs.version"
echo "$CACHE"
