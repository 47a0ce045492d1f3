#!/usr/bin/env bash
# Benchmarks process functions (runtime: process) on this machine, in one run:
#   sudo bench/process.sh [seconds per wrk run, default 10]
# Needs root (namespaces and cgroups) and wrk (apt-get install wrk). Builds a
# static Go hello server (bench/bare, which serves $PORT) and a static stdio
# hello (bench/stdiohello), then measures:
#   - warm throughput of the hello server as an http process function at 32
#     connections, against the same binary run bare on the host;
#   - cold start of the same function, request to response (max_requests 1),
#     and of the first request after a deploy;
#   - per-request overhead of the stdio function over a bare fork/exec of
#     the same program;
#   - for reference, the least any proxy costs: bench/proxy, which does
#     nothing but pass requests through, in front of the same hello server,
#     first beside it, then with the hello server in a cgroup of its own
#     with the function's CPU quota, as Gust's sandbox holds it (the
#     kernel's scheduler charges for every wake-up across cgroups).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
command -v wrk >/dev/null || { echo "bench: wrk is missing: apt-get install wrk" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "bench: process sandboxes need root" >&2; exit 1; }

work=$(mktemp -d)
chmod 755 "$work"
pids=()
cgroup=""
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
	[ -z "$cgroup" ] || rmdir "$cgroup" 2>/dev/null || true
}
trap cleanup EXIT

echo "building..."
go build -o "$work/gust" ./cmd/gust
go build -o "$work/coldstart" ./bench/coldstart
go build -o "$work/stdio" ./bench/stdio
go build -o "$work/proxy" ./bench/proxy
mkdir -p "$work/hello" "$work/hello-cold" "$work/stdio-hello"
CGO_ENABLED=0 go build -o "$work/hello/bare" ./bench/bare
cp "$work/hello/bare" "$work/hello-cold/bare"
CGO_ENABLED=0 go build -o "$work/stdio-hello/stdiohello" ./bench/stdiohello
BARE=127.0.0.1:18191
GUST=127.0.0.1:18190
PROXY=127.0.0.1:18192
PROXIED=127.0.0.1:18193
"$work/hello/bare" -addr "$BARE" & pids+=($!)
"$work/hello/bare" -addr "$PROXIED" & proxied=$!; pids+=($proxied)
"$work/proxy" -addr "$PROXY" -to "$PROXIED" & pids+=($!)
"$work/gust" server --addr "$GUST" --data-dir "$work/data" --log-level warn 2>"$work/server.log" & pids+=($!)
for _ in $(seq 100); do curl -sf "http://$GUST/readyz" >/dev/null && curl -sf "http://$BARE/" >/dev/null && break; sleep 0.1; done

export GUST_URL="http://$GUST" GUST_KEY
GUST_KEY=$(cat "$work/data/admin.key")
if ! "$work/gust" version | grep -q 'runtimes:.*process'; then
	"$work/gust" version >&2
	exit 1
fi
spec() { # name, extra lines
	printf 'name: %s\nruntime: process\nauth: none\n%s\n' "$1" "$2" > "$work/$1/gust.yaml"
}
# One instance serves all 32 connections, with the CPU quota of 2 GiB (two
# cores), as the bare server has both cores.
spec hello 'command: ["./bare"]
concurrency: 32
max_instances: 1
memory_mb: 2048'
spec hello-cold 'command: ["./bare"]
max_requests: 1'
# A core's quota (1 GiB), so that CPU throttling at 128 MiB's half core does
# not hide what Gust adds to the bare fork and exec.
spec stdio-hello 'command: ["./stdiohello"]
protocol: stdio
memory_mb: 1024'
for fn in hello hello-cold stdio-hello; do "$work/gust" deploy "$work/$fn" >/dev/null; done

. bench/lib.sh
compare "gust process hello" "http://$BARE/" "http://$GUST/fn/default/hello"

# into_cgroup PID: moves PID into a new cgroup with two cores' CPU quota, the
# hello function's (memory_mb 2048), in the v1 cpu hierarchy or in v2.
into_cgroup() {
	if [ -d /sys/fs/cgroup/cpu ]; then
		cgroup=/sys/fs/cgroup/cpu/gust-bench-$$
		mkdir "$cgroup"
		echo 200000 > "$cgroup/cpu.cfs_quota_us"
	else
		cgroup=/sys/fs/cgroup/gust-bench-$$
		echo +cpu > /sys/fs/cgroup/cgroup.subtree_control
		mkdir "$cgroup"
		echo "200000 100000" > "$cgroup/cpu.max"
	fi
	echo "$1" > "$cgroup/cgroup.procs"
}
echo "for reference, a proxy that does nothing else, in front of the same hello server:"
conns=32 compare "minimal proxy" "http://$BARE/" "http://$PROXY/"
into_cgroup "$proxied"
conns=32 compare "minimal proxy, cgroup" "http://$BARE/" "http://$PROXY/"

"$work/coldstart" -url "http://$GUST/fn/default/hello-cold" -warm-url "http://$GUST/fn/default/hello" -n 300
mkdir -p "$work/hello-first"
cp "$work/hello/bare" "$work/hello-first/bare"
printf 'name: hello-first\nruntime: process\nauth: none\ncommand: ["./bare"]\n' > "$work/hello-first.yaml"
first_after_deploy hello-first "$work/hello-first" "$work/hello-first.yaml"
echo
"$work/stdio" -url "http://$GUST/fn/default/stdio-hello" -prog "$work/stdio-hello/stdiohello" -n 300
