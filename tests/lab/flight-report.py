#!/usr/bin/env python3
"""Reads one capture of tests/lab/flight-recorder.sh: the BFD Downs it froze on, and what
each CPU did in the detection time before the first of them.

    tests/lab/flight-report.py /tmp/flight/capture-1 [BEFORE_MS [AFTER_MS]]

Prints, for the window BEFORE_MS (default 12) before the first Down to AFTER_MS (2) after:
per CPU the share of each thread and of soft interrupts, the longest stretch with no event
at all (a paused virtual CPU looks like that), soft interrupts longer than 0.5 ms, and a
timeline of the agents' BFD and tunnel-control threads (wake-ups, runs, system calls) and
of ksoftirqd.
"""
import collections
import datetime
import re
import sys

LINE = re.compile(r"^\s*(.+?)-(\d+)\s+\[(\d+)\]\s+\S+\s+([\d.]+):\s+(\w+):\s+(.*)$")
SYSCALLS = {0: "read", 1: "write", 7: "poll", 20: "writev", 44: "sendto", 45: "recvfrom",
            46: "sendmsg", 47: "recvmsg", 202: "futex", 230: "clock_nanosleep",
            232: "epoll_wait", 271: "ppoll", 281: "epoll_pwait", 299: "recvmmsg",
            307: "sendmmsg", 441: "epoll_pwait2"}


def wall(stamp):
    # 2026-12-08T01:17:22.943065Z
    t = datetime.datetime.strptime(stamp.rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f")
    return t.replace(tzinfo=datetime.timezone.utc).timestamp()


def main():
    cap = sys.argv[1]
    before = float(sys.argv[2]) if len(sys.argv) > 2 else 12.0
    after = float(sys.argv[3]) if len(sys.argv) > 3 else 2.0
    offset = float(open(f"{cap}/offset").read())
    agents = {}
    for line in open(f"{cap}/agents.txt"):
        pid, cmd = line.split(" ", 1)
        agents[pid] = "gwa" if "gwa.crosslink" in cmd else "gwb" if "gwb.crosslink" in cmd else "?"
    names = {}
    for line in open(f"{cap}/threads.txt"):
        f = line.split()
        if len(f) >= 3:
            names[f[0]] = f"{agents.get(f[1], '')}:{f[2]}".lstrip(":")
    downs = []
    for line in open(f"{cap}/downs.txt"):
        f = line.split()
        if len(f) > 2:
            downs.append((wall(f[1]) - offset, line.strip()))
    # The same moment's other Downs, from the logs after the freeze.
    trigger = min(t for t, _ in downs)
    for d in (f"{cap}/gwa.log", f"{cap}/gwb.log"):
        for line in open(d):
            if "-> Down" in line:
                f = line.split()
                t = wall(f[0]) - offset
                gw = d.rsplit("/", 1)[1][:3]
                near = trigger - 0.5 < t < trigger + 1.0
                if near and all(abs(t - x) > 1e-6 for x, _ in downs):
                    downs.append((t, f"{gw} {line.strip()}"))
    downs.sort()
    first = trigger
    print("Downs (ms from the one that froze the trace):")
    for t, l in downs:
        print(f"  {1e3 * (t - first):8.2f}  {l[:150]}")
    lo, hi = first - before / 1e3, first + after / 1e3
    events = []
    for line in open(f"{cap}/trace.txt"):
        m = LINE.match(line)
        if not m:
            continue
        comm, pid, cpu, ts, ev, rest = m.groups()
        ts = float(ts)
        if lo - 0.05 <= ts <= hi:
            events.append((ts, int(cpu), comm, pid, ev, rest))
    if not events:
        print("no trace events in the window: the buffer did not reach back that far")
        return
    print(f"trace from {1e3 * (events[0][0] - first):.2f} ms; window {-before} .. {after} ms")
    label = lambda pid, comm: names.get(pid, f"{comm}/{pid}")
    ms = lambda ts: f"{1e3 * (ts - first):8.3f}"
    cpus = sorted({e[1] for e in events})
    for cpu in cpus:
        mine = [e for e in events if e[1] == cpu]
        share = collections.Counter()
        running, since = None, None
        soft_at, soft_long = {}, []
        soft_total = 0.0
        last, gap, gap_at = None, 0.0, None
        for ts, _, comm, pid, ev, rest in mine:
            if last is not None and lo <= ts and ts - last > gap:
                gap, gap_at = ts - last, last
            last = ts
            if ev == "sched_switch":
                m = re.search(r"prev_comm=(.*?) prev_pid=(\d+).*next_comm=(.*?) next_pid=(\d+)", rest)
                if m:
                    if running and since is not None:
                        a, b = max(since, lo), min(ts, hi)
                        if b > a:
                            share[running] += b - a
                    running, since = label(m.group(4), m.group(3)), ts
            elif ev in ("softirq_entry", "softirq_exit"):
                vec = re.search(r"action=(\w+)", rest).group(1)
                if ev == "softirq_entry":
                    soft_at[vec] = ts
                elif vec in soft_at:
                    took = ts - soft_at.pop(vec)
                    if lo <= ts <= hi:
                        soft_total += took
                        if took > 0.0005:
                            soft_long.append((ts - took, took, vec, label(pid, comm)))
        if running and since is not None and hi > max(since, lo):
            share[running] += hi - max(since, lo)
        span = hi - lo
        print(f"\nCPU {cpu}: longest stretch with no event {1e3 * gap:.2f} ms"
              + (f" from {ms(gap_at)}" if gap_at else ""))
        print(f"  soft interrupts {1e3 * soft_total:.2f} ms of {1e3 * span:.1f}")
        for who, t in share.most_common(8):
            print(f"  {100 * t / span:5.1f} %  {who}")
        for at, took, vec, who in soft_long[:10]:
            print(f"  softirq {vec} {1e3 * took:.2f} ms at {ms(at)} in {who}")
    print("\ntimeline of the BFD and control threads and ksoftirqd (ms from that Down):")
    watched = lambda pid, comm: ("bfd" in names.get(pid, "") or "wg-control" in names.get(pid, "")
                                 or comm.startswith("ksoftirqd"))
    for ts, cpu, comm, pid, ev, rest in events:
        if ts < lo:
            continue
        if ev in ("sched_wakeup", "sched_waking"):
            m = re.search(r"comm=(.*?) pid=(\d+).*target_cpu=(\d+)", rest)
            if m and watched(m.group(2), m.group(1)) and ev == "sched_wakeup":
                print(f"{ms(ts)} [{cpu}] wake {label(m.group(2), m.group(1))} on {m.group(3)}"
                      f" (by {label(pid, comm)})")
        elif ev == "sched_switch":
            m = re.search(r"prev_comm=(.*?) prev_pid=(\d+).*prev_state=(\S+).*next_comm=(.*?) next_pid=(\d+)", rest)
            if m and (watched(m.group(2), m.group(1)) or watched(m.group(5), m.group(4))):
                print(f"{ms(ts)} [{cpu}] {label(m.group(2), m.group(1))} ({m.group(3)})"
                      f" -> {label(m.group(5), m.group(4))}")
        elif ev == "sys_enter":
            m = re.search(r"NR (\d+)", rest)
            nr = int(m.group(1)) if m else -1
            print(f"{ms(ts)} [{cpu}] {label(pid, comm)} {SYSCALLS.get(nr, nr)}(")
        elif ev == "sys_exit":
            m = re.search(r"NR (\d+) = (-?\d+)", rest)
            if m:
                print(f"{ms(ts)} [{cpu}] {label(pid, comm)} {SYSCALLS.get(int(m.group(1)), m.group(1))} = {m.group(2)}")


if __name__ == "__main__":
    main()
