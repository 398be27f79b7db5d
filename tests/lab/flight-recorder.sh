#!/usr/bin/env bash
# A flight recorder for a lab bench (bfd_floor): what every CPU ran, when, in the moments
# a BFD session went Down. Keeps the kernel's ftrace ring buffer running (scheduling,
# hard and soft interrupts, and the system calls of the agents' BFD and tunnel-control
# threads) and freezes it CAPTURE_AFTER_MS (40) after a Down appears in either agent's
# log, saving the buffer, the lab's thread names and the clock offset to OUTDIR/capture-N;
# then it runs again, up to CAPTURES times. TRIGGER (a grep -E pattern) says which log
# lines freeze it: by default an end-to-end session's Down (crosslink to crosslink; the
# line routers' own BFD fails often under the bench's load and says little of the
# agents). `tests/lab/flight-report.py OUTDIR/capture-N` reads a capture.
#
#   tests/lab/flight-recorder.sh [CAPTURES [OUTDIR]] &   # then start the bench (root)
#
# It follows the first lab directory made after it started (or LAB), and arms SETTLE_S
# (60) seconds after that lab appeared: the lab's own start is not what a bench measures.
set -euo pipefail
captures=${1:-3}
out=${2:-/tmp/flight}
after_ms=${CAPTURE_AFTER_MS:-40}
t=/sys/kernel/tracing
[ -d "$t/events" ] || mount -t tracefs nodev "$t"
mkdir -p "$out"
started=$(date +%s)

cleanup() {
    echo 0 >"$t/tracing_on" || true
    echo >"$t/set_event" || true
    echo 0 >"$t/events/raw_syscalls/filter" || true
}
trap cleanup EXIT

# The lab this bench made (or LAB, one already running).
lab=${LAB:-}
for _ in $(seq 1 600); do
    [ -n "$lab" ] && break
    for d in /tmp/crosslink-lab-*; do
        [ -d "$d" ] || continue
        if [ "$(stat -c %Y "$d")" -ge "$started" ] && [ -f "$d/gwa.crosslink.log" ] &&
            [ -f "$d/gwb.crosslink.log" ]; then
            lab=$d
        fi
    done
    [ -n "$lab" ] && break
    sleep 1
done
[ -n "$lab" ] || { echo "flight-recorder: no lab appeared" >&2; exit 1; }
echo "flight-recorder: following $lab"

# The agents' threads, once they run and the lab has settled (its start flaps are not
# what a bench measures): BFD and tunnel-control threads get their system calls traced too.
sleep "${SETTLE_S:-60}"
agents=$(pgrep -f "crosslink.*$lab" || true)
threads() {
    for p in $agents $(pgrep -x bird || true) $(pgrep -x iperf3 || true); do
        for task in /proc/"$p"/task/*; do
            [ -r "$task/comm" ] && echo "$(basename "$task") $p $(cat "$task/comm" 2>/dev/null)"
        done
    done
}
threads >"$out/threads.txt"
for p in $agents; do echo "$p $(tr '\0' ' ' </proc/"$p"/cmdline)"; done >"$out/agents.txt"
filter=$(awk '$3 == "bfd" || $3 == "wg-control" { printf "%scommon_pid == %s", sep, $1; sep=" || " }' "$out/threads.txt")

arm() {
    echo 0 >"$t/tracing_on"
    echo mono >"$t/trace_clock"
    echo 16384 >"$t/buffer_size_kb"
    echo >"$t/set_event"
    for e in sched:sched_switch sched:sched_wakeup sched:sched_waking \
        irq:softirq_raise irq:softirq_entry irq:softirq_exit \
        irq:irq_handler_entry irq:irq_handler_exit; do
        echo "$e" >>"$t/set_event"
    done
    if [ -n "$filter" ]; then
        echo "$filter" >"$t/events/raw_syscalls/filter"
        echo raw_syscalls:sys_enter >>"$t/set_event"
        echo raw_syscalls:sys_exit >>"$t/set_event"
    fi
    echo >"$t/trace"
    echo 1 >"$t/tracing_on"
}

# The agents' logs, followed by two `tail`s that sleep until a line comes (polling here
# would itself take the CPU the bench measures).
exec {downs}< <(
    {
        tail -n0 -F "$lab/gwa.crosslink.log" 2>/dev/null | sed -u 's/^/gwa /' &
        tail -n0 -F "$lab/gwb.crosslink.log" 2>/dev/null | sed -u 's/^/gwb /' &
        wait
    } | grep --line-buffered -E -- "${TRIGGER:-end-to-end BFD .*-> Down}"
)
n=0
arm
while [ "$n" -lt "$captures" ] && read -r -u "$downs" first; do
    sleep "$(awk -v ms="$after_ms" 'BEGIN { print ms / 1000 }')"
    echo 0 >"$t/tracing_on"
    n=$((n + 1))
    dir="$out/capture-$n"
    mkdir -p "$dir"
    # Realtime minus the trace clock, to place the log's wall-clock times in the trace.
    python3 -c 'import time; print(time.clock_gettime(time.CLOCK_REALTIME) - time.clock_gettime(time.CLOCK_MONOTONIC))' >"$dir/offset"
    cp "$out/threads.txt" "$out/agents.txt" "$dir/"
    # A moment's other Downs land within the next second.
    sleep 1
    echo "$first" >"$dir/downs.txt"
    while read -r -t 0.01 -u "$downs" more; do echo "$more" >>"$dir/downs.txt"; done
    tail -n 200 "$lab/gwa.crosslink.log" >"$dir/gwa.log"
    tail -n 200 "$lab/gwb.crosslink.log" >"$dir/gwb.log"
    cat "$t/trace" >"$dir/trace.txt"
    echo "flight-recorder: capture $n: $(head -3 "$dir/downs.txt" | cut -c1-160)"
    # What came while the buffer was saved is not in it.
    while read -r -t 0.01 -u "$downs" _; do :; done
    arm
done
