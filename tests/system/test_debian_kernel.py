"""A stock Debian kernel (linux-image-cloud-amd64, fetched and cached by
scripts/fetch-debian-kernel.sh) under cloison-vmm: as bzImage, as vmlinux
through the Linux 64-bit boot protocol and through its PVH note. It must
print `Linux version`, our exact command line and the e820 map we built
(checked entry by entry). On a host with VT-x/AMD-V it boots on to the
busybox initramfs, whose init powers off; on a host without, the test powers
it off through the control socket once the banner is checked.

With a disk and a NIC attached, on a host with hardware virtualization, the
kernel must enumerate both virtio functions on our PCI bus (vendor 1af4,
modern device ids 0x1042 and 0x1041, with their BARs) and acpiphp must
register the free slots as hotplug slots, and its init loads
Debian's virtio modules, reads the marker the test wrote on the disk, finds
the NIC bound to virtio_net with our MAC, brings it up and pings the host
through the tap. On a software-nested host only the banner part runs. With
`clearcpuid=xsave` and the instructions cloison-vmm finishes for KVM's
emulator (src/vmm/emulate.c) the kernel does get through ACPI and PCI
enumeration there (seen in about 3 minutes), but not reliably: two emulated
vCPUs spend minutes in soft lockups and stop_machine rendezvous, the timer
tick outruns the emulated ring 0 once the kernel switches to kvm-clock, and
SYSCALL from ring 3 would not reach the kernel anyway (DESIGN.md section 6).
A test that passes only sometimes is worse than none, so there the test
stops after the banner.

The bzImage case is slow on nested hosts: the decompressor runs in guest
ring 0, which such hosts emulate (about 2 CPU-minutes, ~6 minutes wall on an
idle 2-core machine, much more under load), hence its long timeout."""
import os
import re
import subprocess
import time

import pytest

from conftest import TOP
from netns_util import NETNS_NEEDS, NetNs, can_make_netns
from vmmlib import Vmm, expected_e820, MiB

pytestmark = pytest.mark.usefixtures("kvm")

E820_RE = re.compile(r"BIOS-e820: \[mem (0x[0-9a-f]+)-(0x[0-9a-f]+)\] (usable|reserved|ACPI data)")
TYPES = {"usable": 1, "reserved": 2, "ACPI data": 3}
MEMORY = 512 * MiB
CMDLINE = "console=ttyS0 earlyprintk=ttyS0 panic=-1 cloison.test=deb\u00e9 quiet=no"


def hw_virt():
    with open("/proc/cpuinfo") as f:
        flags = f.read()
    return bool(re.search(r"^flags\s*:.*\b(vmx|svm)\b", flags, re.M))


@pytest.fixture(scope="module")
def debian_kernel():
    r = subprocess.run([str(TOP / "scripts" / "fetch-debian-kernel.sh")], capture_output=True,
                       text=True, timeout=600)
    if r.returncode != 0:
        pytest.skip("cannot fetch Debian's kernel (no Debian mirror reachable?): %s"
                    % r.stderr.strip()[-500:])
    return r.stdout.strip().splitlines()[-1]


def check_banner(vm, timeout, cmdline=CMDLINE):
    vm.wait_serial(r"Linux version \d+\.\d+", timeout)
    m = vm.wait_serial(r"Command line: ([^\r\n]*)\r?\n", 60)
    assert m.group(1) == cmdline
    # The whole map is printed at once, right after the command line.
    vm.wait_serial(r"BIOS-e820:[^\n]*\n(?![^\n]*BIOS-e820)[^\n]*\n", 60)
    seen = [(int(a, 16), int(b, 16) + 1, TYPES[t]) for a, b, t in E820_RE.findall(vm.serial())]
    assert seen == expected_e820(MEMORY), vm.serial()[-3000:]


def boot(vmm_bin, tmp_path, kernel, initrd, protocol, banner_timeout, devices=(), ns=None):
    extra = ["--boot-protocol", protocol] + list(devices)
    vm = Vmm(vmm_bin, kernel, tmp_path, cmdline=CMDLINE, memory="%dM" % (MEMORY >> 20), cpus=2,
             initrd=initrd, extra=extra)
    if ns:
        ns.wrap(vm)
    with vm:
        check_banner(vm, banner_timeout)
        if hw_virt():
            # A real host: on to the initramfs' init, which powers off.
            vm.wait_serial(r"RESULT initramfs_init=ok", 300)
            assert vm.wait_exit(120) == 0, vm.tails()
        else:
            # Software-nested KVM will later stop this kernel at an
            # instruction its emulator lacks (a crash, exit 4, minutes
            # away); turn it off instead, which must work mid-boot too.
            assert vm.control().request("poweroff")["ok"] is True
            assert vm.wait_exit(60) == 0, vm.tails()


def test_vmlinux_linux_boot_protocol(vmm_bin, tmp_path, debian_kernel):
    boot(vmm_bin, tmp_path, os.path.join(debian_kernel, "vmlinux"),
         os.path.join(debian_kernel, "initramfs.cpio.gz"), "linux", 120)


def pci_function(vm, device_id, timeout):
    """Waits for Linux's PCI core to report 1af4:device_id; returns its
    address and the BARs it assigned."""
    m = vm.wait_serial(r"pci (0000:00:[0-9a-f]{2}\.\d): \[1af4:%04x\] type 00 class (0x[0-9a-f]{6})"
                       % device_id, timeout)
    addr = m.group(1)
    bars = vm.wait_serial(r"pci %s: (?:BAR \d |reg 0x[0-9a-f]+: )\[mem (0x[0-9a-f]+)-(0x[0-9a-f]+)"
                          % re.escape(addr), 120)
    return addr, m.group(2), int(bars.group(1), 16), int(bars.group(2), 16) + 1


def test_vmlinux_with_disk_and_nic(vmm_bin, tmp_path, debian_kernel):
    """Issue 3: the kernel with a raw virtio disk and a virtio NIC (a tap in
    a private network namespace). Banner, exact command line and e820 map
    as without devices; Linux enumerates both functions; with hardware
    virtualization the init reads the disk's marker, finds the NIC bound
    to virtio_net with our MAC, brings it up and pings the host."""
    if not can_make_netns():
        pytest.skip(NETNS_NEEDS)
    marker = "cloison-marker-%d-%s" % (os.getpid(), os.urandom(4).hex())
    img = tmp_path / "disk.raw"
    with open(img, "wb") as f:
        f.write(marker.encode())
        f.truncate(64 * MiB)
    mac = "52:54:00:c1:05:%02x" % (os.getpid() & 0xff)
    cmdline = CMDLINE + " cloison.ip=10.203.0.2/24 cloison.peer=10.203.0.1"
    with NetNs(prefix="10.203.0", name="cldeb%d" % os.getpid()) as ns:
        ns.add_tap("tap0")
        vm = Vmm(vmm_bin, os.path.join(debian_kernel, "vmlinux"), tmp_path / "vm",
                 cmdline=cmdline, memory="%dM" % (MEMORY >> 20), cpus=2,
                 initrd=os.path.join(debian_kernel, "initramfs.cpio.gz"),
                 extra=["--boot-protocol", "linux", "--disk", "path=%s" % img,
                        "--net", "tap=tap0,mac=%s" % mac])
        ns.wrap(vm)
        with vm:
            check_banner(vm, 120, cmdline)
            if not hw_virt():
                assert vm.control().request("poweroff")["ok"] is True
                assert vm.wait_exit(60) == 0, vm.tails()
                return
            # Linux's PCI core walks our bus (ECAM from the MCFG table).
            blk = pci_function(vm, 0x1042, 300)
            net = pci_function(vm, 0x1041, 120)
            assert blk[1] == "0x018000" and net[1] == "0x020000", (blk, net)
            for _, _, start, end in (blk, net):
                assert 0xc0000000 <= start < end <= 0xe0000000, (blk, net)
            # ACPI PCI hotplug (docs/vmm.md): acpiphp takes the DSDT's slot
            # Devices, named by _SUN, for every slot the three functions
            # (disk, NIC, entropy) left free
            vm.wait_serial(r"acpiphp: Slot \[31\] registered", 120)
            slots = sorted(int(n) for n in re.findall(r"acpiphp: Slot \[(\d+)\] registered",
                                                      vm.serial()))
            assert slots == list(range(4, 32)), slots
            vm.wait_serial(r"RESULT initramfs_done=ok", 600)
            assert vm.wait_exit(120) == 0, vm.tails()
            r = dict(vm.results())
    assert "insmod_failed" not in r, r
    assert r.get("disk_marker") == marker, r
    assert int(r["disk_sectors"]) == 64 * MiB // 512, r
    assert r.get("nic_driver") == "virtio_net", r
    assert r.get("nic_mac") == mac, r
    assert r.get("nic_operstate") == "up", r
    assert r.get("ping") == "ok", r


def test_vmlinux_pvh(vmm_bin, tmp_path, debian_kernel):
    boot(vmm_bin, tmp_path, os.path.join(debian_kernel, "vmlinux"),
         os.path.join(debian_kernel, "initramfs.cpio.gz"), "pvh", 120)


@pytest.mark.timeout(2000)
def test_bzimage(vmm_bin, tmp_path, debian_kernel):
    boot(vmm_bin, tmp_path, os.path.join(debian_kernel, "vmlinuz"),
         os.path.join(debian_kernel, "initramfs.cpio.gz"), "auto", 1700)


def test_agent_kvp_shutdown_and_balloon_in_a_debian_guest(tmp_path, debian_kernel):
    """Issue 12 on a host with hardware virtualization: the real
    cloison-agent (guest-agent/, built static into the initramfs) in a
    Debian guest under cloisond, over the worker's virtio-vsock: its HELLO
    and heartbeat, the guest's KVP (hostname, OS, kernel), a host KVP that
    reaches the guest, and `vm stop` through the agent (the initramfs has
    nothing that would act on the ACPI power button, so only the agent can
    stop it cleanly). With dynamic memory on, Linux's own virtio_balloon
    driver sends the statistics the balancer goes by and inflates to its
    target."""
    if not hw_virt():
        pytest.skip("needs hardware virtualization (VT-x/AMD-V): on this software-nested "
                    "host a stock kernel does not reach user space (DESIGN.md section 6), "
                    "so the agent in its initramfs cannot run")
    from test_daemon_lib import Daemon
    state = tmp_path / "state"
    state.mkdir()
    (state / "cloisond.json").write_text('{"schema_version": 1, "balancer_interval_ms": 200}')
    d = Daemon(state).start()
    try:
        d.ok("vm", "create", "deb", "--kernel", os.path.join(debian_kernel, "vmlinux"),
             "--initrd", os.path.join(debian_kernel, "initramfs.cpio.gz"),
             "--cmdline", CMDLINE + " cloison.agent", "--memory", "512M",
             "--dynamic-memory", "on", "--memory-minimum", "256M", "--memory-maximum", "768M")
        d.ok("vm", "start", "deb")
        d.console_until("deb", "RESULT agent_started=", timeout=300)
        deadline = time.time() + 60
        isv = {}
        while time.time() < deadline:
            isv = d.vm("deb")["integration_services"]
            if isv.get("agent_version") and isv.get("heartbeat") == "ok" and isv.get("guest"):
                break
            time.sleep(0.2)
        assert isv.get("heartbeat") == "ok" and isv.get("agent_version"), isv
        g = isv["guest"]
        assert g["hostname"] == "cloison-deb" and "Debian" in g["os"], g
        assert g["kernel"].startswith("Linux 6."), g  # the agent's uname: "Linux RELEASE"
        d.ok("vm", "kvp", "set", "deb", "role", "database")
        d.console_until("deb", "RESULT host_kvp=role=database", timeout=30)
        # Linux's balloon driver: statistics, so a demand, and the target met
        deadline = time.time() + 120
        v = d.vm("deb")
        while time.time() < deadline:
            v = d.vm("deb")
            if (v["memory_demand"] is not None and v["memory_assigned"] is not None and
                    abs(v["memory_assigned"] - v["memory_target"]) <= 1 << 20):
                break
            time.sleep(0.2)
        assert v["memory_demand"] is not None, v
        assert abs(v["memory_assigned"] - v["memory_target"]) <= 1 << 20, v
        assert 256 << 20 <= v["memory_assigned"] <= 768 << 20, v
        t = time.time()
        v = d.json("vm", "stop", "deb", "--timeout", "30")
        assert v["state"] == "off" and v["turned_off"] is False, v
        assert time.time() - t < 25
    finally:
        d.cleanup()
