#!/usr/bin/env python3
"""Captures the BGP messages BIRD 2 sends, as test vectors for crosslink's codec.

Run as root from this directory: `python3 capture.py`. It builds two namespaces joined by a
veth pair, starts BIRD in one with an IPv4 and an IPv6 session towards the other, plays a
minimal BGP speaker there (OPEN, KEEPALIVE, then listen), and writes every message BIRD sent
on each session to bird-v4.hex and bird-v6.hex, one message per line. Everything it creates
is removed at the end. Independent of crosslink's own encoder on purpose: the OPEN it sends
is written out by hand below.
"""
import os, socket, subprocess, sys, tempfile, threading, time

NS_B, NS_P = "xlcap-bird", "xlcap-peer"
BIRD_CONF = """
log stderr all;
router id 192.0.2.2;
protocol device {}
protocol static s4 { ipv4; route 198.18.2.0/24 blackhole; route 198.18.3.0/25 blackhole; }
protocol static s6 { ipv6; route 2001:db8:b::/64 blackhole; route 2001:db8:c::/48 blackhole; }
filter out_attrs { bgp_med = 50; bgp_community.add((65101,200)); bgp_large_community.add((65101,0,200)); accept; }
protocol bgp v4 { local 192.0.2.2 as 65101; neighbor 192.0.2.1 as 65001; ipv4 { import none; export filter out_attrs; }; }
protocol bgp v6 { local 2001:db8:99::2 as 65101; neighbor 2001:db8:99::1 as 65001; ipv6 { import none; export filter out_attrs; }; }
"""

def sh(*args):
    subprocess.run(args, check=True)

def open_msg(afi):
    # OPEN: version 4, AS 65001, hold 90, id 192.0.2.1; capabilities MP(afi/unicast),
    # route refresh, 4-octet AS 65001.
    caps = bytes([1, 4, 0, afi, 0, 1, 2, 0, 65, 4, 0, 0, 0xfd, 0xe9])
    body = bytes([4, 0xfd, 0xe9, 0, 90, 192, 0, 2, 1, len(caps) + 2, 2, len(caps)]) + caps
    return b"\xff" * 16 + (19 + len(body)).to_bytes(2, "big") + bytes([1]) + body

KEEPALIVE = b"\xff" * 16 + (19).to_bytes(2, "big") + bytes([4])

def read_msgs(conn, seconds):
    conn.settimeout(0.2)
    buf, out, end = b"", [], time.time() + seconds
    while time.time() < end:
        try:
            chunk = conn.recv(65536)
            if not chunk:
                break
            buf += chunk
        except socket.timeout:
            pass
        while len(buf) >= 19:
            n = int.from_bytes(buf[16:18], "big")
            if len(buf) < n:
                break
            out.append(buf[:n]); buf = buf[n:]
    return out

def serve(family, addr, afi, results):
    # The listening socket lives in the peer namespace: this thread entered it.
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, 179)); s.listen(1); s.settimeout(30)
    conn, _ = s.accept()
    conn.sendall(open_msg(afi) + KEEPALIVE)
    results[afi] = read_msgs(conn, 6)
    conn.close(); s.close()

def enter(ns):
    # os.setns arrived in Python 3.12; libc's works everywhere. CLONE_NEWNET = 0x40000000.
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    if libc.setns(fd, 0x40000000) != 0:
        raise OSError(ctypes.get_errno(), "setns")
    os.close(fd)

def main():
    tmp = tempfile.mkdtemp(prefix="xlcap-")
    bird = None
    try:
        for ns in (NS_B, NS_P):
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
            sh("ip", "netns", "add", ns)
        sh("ip", "-n", NS_B, "link", "add", "name", "p", "type", "veth", "peer", "name", "b", "netns", NS_P)
        for ns, dev, a4, a6 in ((NS_B, "p", "192.0.2.2/24", "2001:db8:99::2/64"), (NS_P, "b", "192.0.2.1/24", "2001:db8:99::1/64")):
            sh("ip", "-n", ns, "addr", "add", a4, "dev", dev)
            sh("ip", "-n", ns, "addr", "add", a6, "dev", dev, "nodad")
            sh("ip", "-n", ns, "link", "set", "dev", dev, "up")
            sh("ip", "-n", ns, "link", "set", "dev", "lo", "up")
        conf = os.path.join(tmp, "bird.conf")
        open(conf, "w").write(BIRD_CONF)
        results = {}
        threads = []
        for fam, addr, afi in ((socket.AF_INET, "192.0.2.1", 1), (socket.AF_INET6, "2001:db8:99::1", 2)):
            def run(fam=fam, addr=addr, afi=afi):
                enter(NS_P)
                serve(fam, addr, afi, results)
            t = threading.Thread(target=run); t.start(); threads.append(t)
        time.sleep(0.5)
        bird = subprocess.Popen(["ip", "netns", "exec", NS_B, "bird", "-f", "-c", conf, "-s", os.path.join(tmp, "ctl")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for t in threads:
            t.join(40)
        for afi, name in ((1, "bird-v4.hex"), (2, "bird-v6.hex")):
            msgs = results.get(afi)
            if not msgs:
                sys.exit(f"no messages captured for AFI {afi}")
            with open(name, "w") as f:
                f.write(f"# BGP messages sent by {subprocess.run(['bird', '--version'], capture_output=True, text=True).stderr.strip()}, captured by capture.py\n")
                for m in msgs:
                    f.write(m.hex() + "\n")
            print(f"{name}: {len(msgs)} messages")
    finally:
        if bird:
            bird.kill(); bird.wait()
        for ns in (NS_B, NS_P):
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
        subprocess.run(["rm", "-rf", tmp])

if __name__ == "__main__":
    main()
