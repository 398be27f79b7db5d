#!/usr/bin/env python3
"""Captures BFD control packets sent by BIRD 2, as test vectors for crosslink's codec.

Run as root from this directory: `python3 capture.py`. Two namespaces joined by a veth
pair; BIRD in one runs three single-hop BFD sessions towards the other: plain, Keyed SHA1
and Meticulous Keyed SHA1 (password "crosslink"). A UDP socket on port 3784 in the other
namespace records what BIRD sends (Down packets: nobody answers). Writes bird-bfd.hex:
`<kind> <hex>` per line. Everything it creates is removed at the end.
"""
import ctypes, os, socket, subprocess, tempfile, time

NS_B, NS_P = "xlcap-bfd-bird", "xlcap-bfd-peer"
CONF = """
log stderr all;
router id 192.0.2.2;
protocol device {}
protocol bfd {
  interface "p1" { interval 100 ms; multiplier 3; };
  interface "p2" { interval 100 ms; multiplier 3; authentication keyed sha1; password "crosslink" { id 7; }; };
  interface "p3" { interval 100 ms; multiplier 3; authentication meticulous keyed sha1; password "crosslink" { id 9; }; };
  neighbor 192.0.2.1 dev "p1";
  neighbor 198.51.100.1 dev "p2";
  neighbor 203.0.113.1 dev "p3";
}
"""

def sh(*args):
    subprocess.run(args, check=True)

def enter(ns):
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
        for i, net in ((1, "192.0.2"), (2, "198.51.100"), (3, "203.0.113")):
            sh("ip", "-n", NS_B, "link", "add", "name", f"p{i}", "type", "veth", "peer", "name", f"b{i}", "netns", NS_P)
            sh("ip", "-n", NS_B, "addr", "add", f"{net}.2/24", "dev", f"p{i}")
            sh("ip", "-n", NS_P, "addr", "add", f"{net}.1/24", "dev", f"b{i}")
            sh("ip", "-n", NS_B, "link", "set", "dev", f"p{i}", "up")
            sh("ip", "-n", NS_P, "link", "set", "dev", f"b{i}", "up")
        conf = os.path.join(tmp, "bird.conf")
        open(conf, "w").write(CONF)
        sh("bird", "-p", "-c", conf)
        enter(NS_P)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", 3784))
        s.settimeout(0.2)
        bird = subprocess.Popen(["ip", "netns", "exec", NS_B, "bird", "-f", "-c", conf, "-s", os.path.join(tmp, "ctl")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        got, end = {}, time.time() + 8
        while time.time() < end and len(got) < 3 * 3:
            try:
                data, _ = s.recvfrom(2048)
            except socket.timeout:
                continue
            # The destination tells the session; recvmsg would give it, the auth type too.
            kind = {0: "plain", 4: "keyed-sha1", 5: "meticulous-keyed-sha1"}.get(data[24] if len(data) > 24 else 0, "plain")
            got.setdefault(kind, [])
            if len(got[kind]) < 3:
                got[kind].append(data)
        version = subprocess.run(["bird", "--version"], capture_output=True, text=True).stderr.strip()
        with open("bird-bfd.hex", "w") as f:
            f.write(f"# BFD control packets sent by {version}, captured by capture.py; key \"crosslink\"\n")
            for kind, pkts in sorted(got.items()):
                for p in pkts:
                    f.write(f"{kind} {p.hex()}\n")
        print({k: len(v) for k, v in got.items()})
    finally:
        if bird:
            bird.kill(); bird.wait()
        for ns in (NS_B, NS_P):
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
        subprocess.run(["rm", "-rf", tmp])

if __name__ == "__main__":
    main()
