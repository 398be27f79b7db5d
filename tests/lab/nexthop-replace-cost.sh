#!/bin/bash
# The kernel's cost of one nexthop-group replace with N routes using the group, IPv4 and
# IPv6 (net.ipv4.nexthop_compat_mode=0), in a namespace of its own; `ip` per replace, so
# subtract the printed baseline. Run as root: tests/lab/nexthop-replace-cost.sh
set -e
ns=xl-nhb
ip netns del $ns 2>/dev/null || true
ip netns add $ns
batch=$(mktemp)
trap 'ip netns del $ns 2>/dev/null; rm -f "$batch"' EXIT
x() { ip -n $ns "$@"; }
x link add va type veth peer name vb
x link add vc type veth peer name vd
x link set va up; x link set vb up; x link set vc up; x link set vd up
x addr add 10.0.0.1/24 dev va; x addr add 10.0.1.1/24 dev vc
x -6 addr add 2001:db8:a::1/64 dev va nodad; x -6 addr add 2001:db8:c::1/64 dev vc nodad
ip netns exec $ns sysctl -qw net.ipv4.nexthop_compat_mode=0
x nexthop add id 1 via 10.0.0.2 dev va
x nexthop add id 2 via 10.0.1.2 dev vc
x nexthop add id 3 via 2001:db8:a::2 dev va
x nexthop add id 4 via 2001:db8:c::2 dev vc
x nexthop add id 10 group 1
x nexthop add id 11 group 3
for n in 100 10000 100000; do
  x route flush proto 210 2>/dev/null || true
  x -6 route flush proto 210 2>/dev/null || true
  python3 - $n > "$batch" <<'PY'
import sys
n=int(sys.argv[1])
for i in range(n):
    print(f"route add 10.{64+(i>>16)}.{(i>>8)&255}.{i&255}/32 nhid 10 proto 210")
    print(f"route add 2001:db8:f:{i>>16:x}:{i&0xffff:x}::/80 nhid 11 proto 210")
PY
  x -batch "$batch"
  for k in 1 2 3; do
    t0=$(date +%s%N); x nexthop replace id 10 group 2; t1=$(date +%s%N)
    x nexthop replace id 10 group 1
    t2=$(date +%s%N); x nexthop replace id 11 group 4; t3=$(date +%s%N)
    x nexthop replace id 11 group 3
    echo "n=$n v4 replace $(( (t1-t0)/1000 )) us (incl. ip exec), v6 replace $(( (t3-t2)/1000 )) us"
  done
done
t0=$(date +%s%N); x nexthop list >/dev/null; t1=$(date +%s%N); echo "ip exec baseline ~ $(( (t1-t0)/1000 )) us"
