#!/usr/bin/env python3
"""Writes the checked-in seed corpora under tests/fuzz/corpus/<target>/.

Each seed is a small, meaningful input in the target's own encoding (the
comment at the top of each fuzz_*.c says what it is): a well-formed
request of each kind, and a few of the hostile shapes the target exists
for (descriptor loops, addresses outside RAM, huge lengths, indirect
tables, bad JSON). Run it again after changing an encoding:
    python3 tests/fuzz/make_seeds.py
Crashing inputs found later are added by hand as crash-<what>."""
import json
import os
import struct

TOP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def write(target, name, data):
    d = os.path.join(TOP, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- fuzz_virtio.c's operations ----------------------------------------
F_INDIRECT = 1 << 28
F_EVENT_IDX = 1 << 29
NEXT, WRITE, INDIRECT = 1, 2, 4


def init(features, hi=1):
    """Driver init; hi holds feature bits 32..37 (bit 0: VERSION_1)."""
    return bytes([9]) + struct.pack("<IB", features & 0xffffffff, hi)


def ram(gpa, data, high=False):
    out = b""
    while data:
        chunk, data = data[:255], data[255:]
        out += bytes([4, 1 if high else 0]) + struct.pack("<HB", gpa, len(chunk)) + chunk
        gpa += len(chunk)
    return out


def desc_fields(addr, length, flags, nxt):
    form = 0
    body = b""
    if addr > 0xffff:
        form |= 1
        body += struct.pack("<Q", addr)
    else:
        body += struct.pack("<H", addr)
    if length > 0xfff:
        form |= 4
        body += struct.pack("<I", length)
    else:
        body += struct.pack("<H", length)
    body += bytes([flags & 7, nxt & 0xff])
    return bytes([form]) + body


def desc(q, i, addr, length, flags=0, nxt=0):
    return bytes([5, q, i]) + desc_fields(addr, length, flags, nxt)


def table_desc(gpa, addr, length, flags=0, nxt=0):
    return bytes([12]) + struct.pack("<H", gpa) + desc_fields(addr, length, flags, nxt)


def avail(q, head):
    return bytes([6, q, head])


def kick(q):
    return bytes([7, q])


LOOP = bytes([8])


def devop(*b):
    return bytes([10]) + bytes(b)


# ---- virtio-blk -----------------------------------------------------------
BLK_FEATURES = (1 << 2) | (1 << 6) | (1 << 9) | (1 << 10) | (1 << 13) | (1 << 14) | F_INDIRECT
HDR, DATA, STATUS = 0x8000, 0x9000, 0x9f00


def blk_hdr(t, sector=0):
    return ram(HDR, struct.pack("<IIQ", t, 0, sector))


def blk_chain(q=0, data_len=512, data_flags=WRITE):
    return (desc(q, 0, HDR, 16, NEXT, 1) + desc(q, 1, DATA, data_len, NEXT | data_flags, 2) +
            desc(q, 2, STATUS, 1, WRITE, 0) + avail(q, 0) + kick(q))


def blk_seeds():
    t = "fuzz_virtio_blk"
    base = bytes([2]) + init(BLK_FEATURES)
    write(t, "read", base + blk_hdr(0, 3) + blk_chain())
    write(t, "write", base + blk_hdr(1, 5) + ram(DATA, b"\xab" * 512) + blk_chain(data_flags=0))
    write(t, "flush", base + blk_hdr(4) + desc(0, 0, HDR, 16, NEXT, 1) +
          desc(0, 1, STATUS, 1, WRITE) + avail(0, 0) + kick(0))
    write(t, "get-id", base + blk_hdr(8) + blk_chain(data_len=20))
    write(t, "discard", base + blk_hdr(11) + ram(DATA, struct.pack("<QII", 8, 8, 0)) +
          blk_chain(data_len=16, data_flags=0))
    write(t, "write-zeroes-unmap", base + blk_hdr(13) + ram(DATA, struct.pack("<QII", 0, 16, 1)) +
          blk_chain(data_len=16, data_flags=0))
    write(t, "read-past-end", base + blk_hdr(0, 127) + blk_chain(data_len=1024))
    write(t, "read-only-write", bytes([3]) + init(BLK_FEATURES) + blk_hdr(1) +
          blk_chain(data_flags=0))
    # Indirect: one descriptor pointing at a three-entry table at 0xa000.
    write(t, "indirect", base + blk_hdr(0, 1) + desc(0, 0, 0xa000, 48, INDIRECT) +
          table_desc(0xa000, HDR, 16, NEXT, 1) + table_desc(0xa010, DATA, 512, NEXT | WRITE, 2) +
          table_desc(0xa020, STATUS, 1, WRITE) + avail(0, 0) + kick(0))
    write(t, "loop", base + blk_hdr(0) + desc(0, 0, HDR, 16, NEXT, 1) +
          desc(0, 1, DATA, 512, NEXT, 0) + avail(0, 0) + kick(0))
    write(t, "outside-ram", base + blk_hdr(0) + desc(0, 0, HDR, 16, NEXT, 1) +
          desc(0, 1, 0xfffffffff000, 512, NEXT | WRITE, 2) + desc(0, 2, STATUS, 1, WRITE) +
          avail(0, 0) + kick(0))
    write(t, "huge-length", base + blk_hdr(0) + desc(0, 0, HDR, 16, NEXT, 1) +
          desc(0, 1, DATA, 0xffffffff, NEXT | WRITE, 2) + desc(0, 2, STATUS, 1, WRITE) +
          avail(0, 0) + kick(0))
    write(t, "two-queues-event-idx", bytes([6]) + init(BLK_FEATURES | F_EVENT_IDX | (1 << 12)) +
          blk_hdr(0) + blk_chain(0) + blk_chain(1) + bytes([13, 1, 0, 0, 1, 0, 0, 0]) +
          devop(1) + blk_chain(1) + LOOP + bytes([11, 2]))


# ---- virtio-net -----------------------------------------------------------
NET_FEATURES = (1 << 0) | (1 << 1) | (1 << 5) | (1 << 7) | (1 << 11) | (1 << 16) | F_INDIRECT


def frame(n=60):
    eth = b"\xff" * 6 + b"\x52\x54\x00\x00\x00\x01" + b"\x08\x00"
    return eth + bytes(range(n - len(eth)))


def net_hdr(flags=0, gso=0, hdr_len=0, gso_size=0, csum_start=0, csum_off=0):
    return struct.pack("<BBHHHHH", flags, gso, hdr_len, gso_size, csum_start, csum_off, 1)


def inject(data):
    return devop(0) + struct.pack("<H", len(data)) + data


def net_seeds():
    t = "fuzz_virtio_net"
    base = bytes([0]) + init(NET_FEATURES)
    rx = desc(0, 0, 0x8000, 1526, WRITE) + avail(0, 0) + kick(0)
    write(t, "receive", base + rx + inject(net_hdr() + frame()))
    tx = ram(0x9000, net_hdr() + frame()) + desc(1, 0, 0x9000, 72) + avail(1, 0) + kick(1)
    write(t, "transmit", base + tx + devop(1))
    write(t, "transmit-csum-gso", base + ram(0x9000, net_hdr(1, 1, 54, 1448, 34, 16) + frame(200)) +
          desc(1, 0, 0x9000, 12, NEXT, 1) + desc(1, 1, 0x9010, 200) + avail(1, 0) + kick(1) +
          devop(1))
    write(t, "receive-short-buffer", base + desc(0, 0, 0x8000, 8, WRITE) + avail(0, 0) + kick(0) +
          inject(net_hdr() + frame()))
    write(t, "receive-then-tap-gone", base + rx + inject(net_hdr() + frame()) + devop(3) + tx)
    write(t, "transmit-blocked", bytes([1]) + init(NET_FEATURES) + devop(2) + tx + devop(1) + LOOP)
    write(t, "transmit-header-only", base + ram(0x9000, net_hdr()) + desc(1, 0, 0x9000, 12) +
          avail(1, 0) + kick(1))


# ---- virtio-console ---------------------------------------------------------
def cons_seeds():
    t = "fuzz_virtio_console"
    base = bytes([0]) + init(F_INDIRECT) + devop(0) + LOOP
    rx = desc(0, 0, 0x8000, 256, WRITE) + avail(0, 0) + kick(0)
    write(t, "input", base + rx + devop(1) + struct.pack("<H", 6) + b"hello\n" + LOOP)
    write(t, "output", base + ram(0x9000, b"login: ") + desc(1, 0, 0x9000, 7) + avail(1, 0) +
          kick(1) + devop(2))
    write(t, "client-hangs-up", base + rx + devop(3) + LOOP + ram(0x9000, b"x") +
          desc(1, 0, 0x9000, 1) + avail(1, 0) + kick(1))
    write(t, "newest-client-wins", base + devop(4) + LOOP + rx + devop(5) +
          struct.pack("<H", 2) + b"hi" + LOOP)
    write(t, "file", bytes([1]) + init(0) + ram(0x9000, b"boot\n") + desc(1, 0, 0x9000, 5) +
          avail(1, 0) + kick(1))


# ---- virtio-vsock -----------------------------------------------------------
def vsock_hdr(op, src_port, dst_port, length=0, src_cid=3, dst_cid=2, buf_alloc=65536,
              fwd_cnt=0, flags=0, typ=1):
    return struct.pack("<QQIIIHHIII", src_cid, dst_cid, src_port, dst_port, length, typ, op,
                       flags, buf_alloc, fwd_cnt)


def vsock_seeds():
    t = "fuzz_virtio_vsock"
    base = bytes([0]) + init(F_INDIRECT | F_EVENT_IDX)
    rx = (desc(0, 0, 0x8000, 1024, WRITE) + avail(0, 0) + desc(0, 1, 0x8400, 1024, WRITE) +
          avail(0, 1) + kick(0))
    ev = desc(2, 0, 0x8800, 4, WRITE) + avail(2, 0) + kick(2)

    def tx(i, hdr, payload=b""):
        gpa = 0x9000 + 0x200 * (i % 8)
        out = ram(gpa, hdr + payload)
        return out + desc(1, i % 16, gpa, len(hdr) + len(payload)) + avail(1, i % 16) + kick(1)

    write(t, "guest-connect", base + rx + devop(4) + tx(0, vsock_hdr(1, 2000, 1000)) +
          devop(4) + tx(1, vsock_hdr(5, 2000, 1000, 5), b"hello") + devop(8 | 1) +
          struct.pack("<H", 5) + b"world" + LOOP + tx(2, vsock_hdr(4, 2000, 1000, flags=3)))
    write(t, "host-connect", base + rx + devop(0) + struct.pack("<H", 1234) + LOOP +
          tx(0, vsock_hdr(2, 1234, 1 << 30)) + devop(1) + struct.pack("<H", 4) + b"ping" +
          LOOP + tx(1, vsock_hdr(5, 1234, 1 << 30, 4), b"pong") + devop(2) + devop(3) + LOOP)
    write(t, "no-listener-rst", base + rx + tx(0, vsock_hdr(1, 2001, 4444)))
    write(t, "bad-source-cid", base + rx + tx(0, vsock_hdr(1, 2000, 1000, src_cid=9)))
    write(t, "length-not-there", base + rx + tx(0, vsock_hdr(5, 2000, 1000, 300)))
    write(t, "short-header", base + ram(0x9000, b"\x03" * 20) + desc(1, 0, 0x9000, 20) +
          avail(1, 0) + kick(1))
    write(t, "credit-lie", base + rx + devop(4) + tx(0, vsock_hdr(1, 2000, 1000)) +
          devop(4) + tx(1, vsock_hdr(6, 2000, 1000, fwd_cnt=77)))
    write(t, "restore-event", base + rx + ev + devop(4) + tx(0, vsock_hdr(1, 2000, 1000)) +
          devop(6) + LOOP)


# ---- the PCI transport --------------------------------------------------------
def bar_write(where, sel_region, length_log, value):
    return bytes([0, sel_region | (length_log << 4), where]) + value.to_bytes(1 << length_log, "little")


def bar_read(where, sel_region, length_log):
    return bytes([1, sel_region | (length_log << 4), where])


def cfg_write(off, length_log, value):
    return bytes([2, length_log | 4]) + struct.pack("<H", off) + value.to_bytes(1 << length_log, "little")


def cfg_read(off, length_log):
    return bytes([3, length_log | 4]) + struct.pack("<H", off)


def pci_seeds():
    t = "fuzz_virtio_pci"
    write(t, "init-rng", bytes([0]) + init(F_INDIRECT | F_EVENT_IDX) + bytes([15]))
    write(t, "init-console-config", bytes([1]) + init(0) + bar_read(0, 3, 2) + bar_read(4, 3, 2) +
          bar_read(8, 3, 1))
    # Feature selects, both halves of the 64-bit ring addresses, a bad
    # queue size, enable, status read back.
    write(t, "common-cfg", bytes([0]) + bar_write(0, 0, 2, 1) + bar_read(4, 0, 2) +
          bar_write(22, 0, 1, 0) + bar_write(24, 0, 1, 3) + bar_write(32, 0, 2, 0x1000) +
          bar_write(36, 0, 2, 0) + bar_write(28, 0, 1, 1) + bar_read(20, 0, 0) +
          bar_write(20, 0, 0, 0) + bar_write(22, 0, 1, 7) + bar_read(24, 0, 1))
    # The PCI configuration access window (cap at 0x74 for rng, 0x84 for the
    # console): bar 0, offset 20 (device status), length 1, then data.
    for cap, dev in ((0x74, 0), (0x84, 1)):
        write(t, "pci-cfg-window-%d" % dev, bytes([dev]) + cfg_write(cap + 4, 0, 0) +
              cfg_write(cap + 8, 2, 20) + cfg_write(cap + 12, 2, 1) + cfg_write(cap + 16, 0, 3) +
              cfg_read(cap + 16, 0) + cfg_write(cap + 8, 2, 0x3000) + cfg_write(cap + 12, 2, 2) +
              cfg_write(cap + 16, 1, 0))
    write(t, "notify-and-msix", bytes([0]) + init(0) + bar_write(0, 4, 1, 0) + bar_write(4, 4, 1, 1) +
          bar_write(0x10, 0, 1, 0x7fff) + bytes([0, 0x25]) + struct.pack("<H", 0x4000) +
          b"\x00\x00\xe0\xfe" + bytes([11, 0, 11, 1, 11, 2]))


# ---- emulate.c --------------------------------------------------------------
def emu(insn, mode=1 | 2 | 4 | 64, regs=None, cr0=0, efer=0x500, fs=0, gs=0, xlate=0, ram_=b""):
    r = regs or {}
    names = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11",
             "r12", "r13", "r14", "r15", "rip", "rflags"]
    b = bytes([mode, len(insn)]) + insn.ljust(15, b"\x90")
    b += b"".join(struct.pack("<Q", r.get(n, 0)) for n in names)
    b += struct.pack("<QQQQHB", cr0, efer, fs, gs, 0x10, 1) + struct.pack("<Q", xlate)
    b += struct.pack("<IIII", 0x037f, 0, 0, 0)
    return b + ram_


def emu_seeds():
    t = "fuzz_emulate"
    write(t, "int3", emu(b"\xcc", regs={"rip": 0x1000}))
    write(t, "fwait", emu(b"\x9b", cr0=0x22))
    write(t, "clac", emu(b"\x0f\x01\xca", regs={"rflags": 1 << 18}))
    write(t, "stac", emu(b"\x0f\x01\xcb"))
    write(t, "lock-cmpxchg16b", emu(b"\xf0\x48\x0f\xc7\x0e", regs={"rsi": 0x100, "rax": 1},
                                    ram_=b"\x00" * 0x100 + struct.pack("<QQ", 1, 0)))
    write(t, "cmpxchg16b-gs-sib", emu(b"\x65\xf0\x48\x0f\xc7\x4c\x24\x10", regs={"rsp": 0x200},
                                      gs=0x20))
    write(t, "popcnt-reg", emu(b"\xf3\x48\x0f\xb8\xc1", regs={"rcx": 0xf0f0}))
    write(t, "popcnt-mem-rip", emu(b"\xf3\x0f\xb8\x05\x10\x00\x00\x00", regs={"rip": 0x100}))
    write(t, "popcnt16", emu(b"\x66\xf3\x0f\xb8\x03", regs={"rbx": 0x40}))
    write(t, "ldmxcsr", emu(b"\x0f\xae\x50\x08", regs={"rax": 0x300}, ram_=b"\x00" * 0x308 +
                            struct.pack("<I", 0x1f80)))
    write(t, "stmxcsr-page-cross", emu(b"\x0f\xae\x5c\x24\xfe", regs={"rsp": 0x1000}))
    write(t, "not-64-bit", emu(b"\xcc", mode=2))
    write(t, "truncated", emu(b"\xf3\x48\x0f", mode=3))


# ---- control socket ------------------------------------------------------------
def ctl(state, lines, clients=1, chunk=255):
    b = bytes([state | ((clients - 1) << 4)])
    data = b"".join(l if isinstance(l, bytes) else l.encode() for l in lines)
    c = 0
    while data:
        n = min(chunk * 16 + 1, len(data))
        b += bytes([c, chunk]) + data[:n]
        data = data[n:]
        c = (c + 1) % clients
    return b


def ctl_seeds():
    t = "fuzz_control"
    write(t, "status", ctl(1, ['{"id":1,"cmd":"status"}\n']))
    write(t, "pause-resume", ctl(1, ['{"id":"a","cmd":"pause"}\n', '{"id":"b","cmd":"resume"}\r\n']))
    write(t, "shutdown-poweroff-reset", ctl(1, ['{"cmd":"shutdown"}\n', '{"cmd":"reset"}\n',
                                                '{"id":[1,2],"cmd":"poweroff"}\n']))
    write(t, "bad-requests", ctl(2, ['[1,2]\n', '{"cmd":7}\n', '{"id":null}\n', 'not json\n',
                                     '{"cmd":"nope' + "x" * 80 + '"}\n', '\n\n']))
    write(t, "save", ctl(1, ['{"id":1,"cmd":"save","path":"/var/lib/x"}\n', '{"cmd":"save"}\n',
                             '{"cmd":"save","path":"rel"}\n']))
    write(t, "line-too-long", ctl(1, ['{"cmd":"status"}\n']) + bytes([0x80, 0]) +
          bytes([0, 0]) + b"\n")
    write(t, "split-lines", ctl(1, ['{"id":3,', '"cmd":"st', 'atus"}\n'], clients=2, chunk=0))
    # hot-plug: the harness's stand-in adds on slot 5, slot 3 is removable
    # (its reply waits until the input ends), 1 is not, 2 is busy
    write(t, "device-add-remove", ctl(1 | 8, [
        '{"id":1,"cmd":"device-add","kind":"disk","path":"/d.img"}\n',
        '{"id":2,"cmd":"device-add","kind":"net","tap":"tap0"}\n',
        '{"id":3,"cmd":"device-add","kind":"cdrom"}\n',
        '{"id":4,"cmd":"device-remove","slot":3,"timeout_ms":5}\n',
        '{"id":5,"cmd":"device-remove","slot":1}\n', '{"id":6,"cmd":"device-remove","slot":2}\n',
        '{"id":7,"cmd":"device-remove","slot":3}\n', '{"id":8,"cmd":"device-remove","slot":-1}\n',
        '{"id":9,"cmd":"status"}\n']))


# ---- cloisond's REST API ---------------------------------------------------------
METHODS = ["GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS", "get"]
HEADERS = ["Content-Length", "Transfer-Encoding", "Content-Type", "Last-Event-ID", "Upgrade",
           "Expect", "Connection", "Host"]


def http(method, url, body=b"", headers=(), chunk=255):
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    elif isinstance(body, str):
        body = body.encode()
    hs = list(headers)
    if body and not any(h == "Content-Length" for h, _ in hs):
        hs.append(("Content-Length", str(len(body))))
    b = bytes([METHODS.index(method)]) + bytes([len(url)]) + url.encode()
    b += bytes([len(hs)])
    for name, value in hs:
        b += bytes([HEADERS.index(name), len(value)]) + value.encode()
    return b + struct.pack("<H", len(body)) + body + bytes([chunk])


def api(*requests, nobody=False):
    return bytes([1 if nobody else 0]) + b"".join(requests)


def api_seeds():
    t = "fuzz_daemon_api"
    vm = {"name": "web", "kernel": "/bin/sh", "cpus": 2, "memory": 268435456,
          "cmdline": "console=ttyS0", "notes": "fuzz"}
    full = dict(vm, disks=[{"path": "/dev/shm/cloison-fuzz/disk.raw", "readonly": True}],
                network_adapters=[{"tap": "tap0", "mac": "52:54:00:12:34:56"}],
                automatic_start_action="nothing", automatic_stop_action="shutdown",
                operators=["nobody"])
    write(t, "list-host-events", api(http("GET", "/v1/vms"), http("GET", "/v1/host"),
                                     http("GET", "/v1/events?since=0"),
                                     http("GET", "/v1/events", headers=[("Last-Event-ID", "3")])))
    write(t, "create-show-set-remove", api(http("POST", "/v1/vms", vm), http("GET", "/v1/vms/web"),
                                           http("PATCH", "/v1/vms/web", {"cpus": 1, "notes": "x"}),
                                           http("DELETE", "/v1/vms/web")))
    write(t, "create-full", api(http("POST", "/v1/vms", full, chunk=1),
                                http("PATCH", "/v1/vms/web", {"add_disks": [{"path": "/dev/shm/cloison-fuzz/disk.raw"}],
                                                              "remove_operators": ["nobody"]})))
    write(t, "actions", api(http("POST", "/v1/vms", vm), http("POST", "/v1/vms/web/start"),
                            http("POST", "/v1/vms/web/stop", {"turn_off": True, "timeout": 0}),
                            http("POST", "/v1/vms/web/pause"), http("POST", "/v1/vms/web/resume"),
                            http("POST", "/v1/vms/web/restart", {}), http("POST", "/v1/vms/web/dance"),
                            http("POST", "/v1/vms/web/console", headers=[("Upgrade", "cloison-console")])))
    write(t, "bad-bodies", api(http("POST", "/v1/vms", '{"name": "x", "kernel": '),
                               http("POST", "/v1/vms", '[1,2,3]'),
                               http("POST", "/v1/vms", '{"name":"a","name":"b"}'),
                               http("POST", "/v1/vms", {"name": "../etc", "kernel": "/bin/sh"}),
                               http("POST", "/v1/vms", {"name": "x", "kernel": "/bin/sh", "cpus": "two"})))
    write(t, "bad-heads", api(http("GET", "/v1/vms/%2e%2e"), http("PUT", "/v1/vms"),
                              http("GET", "/v2/nothing"), http("GET", "/" + "a/" * 20),
                              http("POST", "/v1/vms", "{}", headers=[("Content-Length", "99999999999")]),
                              http("POST", "/v1/vms", "{}", headers=[("Content-Length", "2"),
                                                                     ("Transfer-Encoding", "chunked")])))
    write(t, "nobody", api(http("POST", "/v1/vms", vm), http("GET", "/v1/vms"),
                           http("GET", "/v1/vms/web"), http("DELETE", "/v1/vms/web"), nobody=True))


# ---- virtio-balloon --------------------------------------------------------
def balloon_seeds():
    t = "fuzz_virtio_balloon"
    feats = (1 << 1) | (1 << 5) | F_EVENT_IDX
    pfns = struct.pack("<7I", 0, 1, 2, 0x20, 0x1f, 0xffffffff, 0x100000)
    write(t, "inflate-deflate", bytes([1]) + init(feats) + ram(0x8000, pfns) +
          desc(0, 0, 0x8000, len(pfns)) + avail(0, 0) + kick(0) + LOOP +
          desc(1, 0, 0x8000, len(pfns)) + avail(1, 0) + kick(1) + LOOP +
          bar_write(4, 2, 2, 3) + bar_read(0, 2, 2) + devop(0))
    stats = struct.pack("<HQ", 5, 1 << 30) + struct.pack("<HQ", 4, 1 << 20) + \
        struct.pack("<HQ", 0xbeef, 7)
    write(t, "stats-held", bytes([0]) + init(feats) + ram(0x9000, stats) +
          desc(2, 0, 0x9000, len(stats)) + avail(2, 0) + kick(2) + devop(0) + LOOP +
          desc(2, 1, 0x9000, 25) + avail(2, 1) + kick(2) + bytes([11, 0]) + devop(2) +
          bytes([11, 1]) + devop(0) + devop(1) + struct.pack("<I", 0x10000))
    write(t, "report", bytes([1]) + init(feats) +
          desc(3, 0, 0x4000, 0x3000, WRITE) + avail(3, 0) + desc(3, 1, 0x5001, 0x1fff, WRITE) +
          avail(3, 1) + kick(3) + LOOP + devop(0) +
          desc(3, 2, 0xf000, 0x2000, WRITE) + avail(3, 2) + kick(3) + LOOP)
    write(t, "no-stats-feature", bytes([0]) + init(1 << 5) + desc(2, 0, 0x4000, 0x1000, WRITE) +
          avail(2, 0) + kick(2) + LOOP + devop(0) + bytes([11, 2]))


def main():
    balloon_seeds()
    blk_seeds()
    net_seeds()
    cons_seeds()
    vsock_seeds()
    pci_seeds()
    emu_seeds()
    ctl_seeds()
    api_seeds()


if __name__ == "__main__":
    main()
