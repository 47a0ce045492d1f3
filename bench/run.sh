#!/usr/bin/env bash
# Benchmarks Gust against a bare net/http server, on this machine, in one run:
#   bench/run.sh [seconds per wrk run, default 10]
# Builds what it needs, starts both servers on loopback, drives them with the
# same wrk load at 32 connections and at 1 in alternating rounds ($rounds,
# default 3), prints requests/s, p50 and p99 of each and the median of Gust's
# ratios to the baseline, then the same for reference with bench/wasmhost, a
# host of the same module that does nothing else (the least any host of it
# costs), then measures cold starts (and the first request after a deploy)
# and warm requests of the SDK hello function, and asynchronous invocations. Needs wrk (apt-get install wrk).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
command -v wrk >/dev/null || { echo "bench: wrk is missing: apt-get install wrk" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

echo "building..."
go build -o "$work/gust" ./cmd/gust
go build -o "$work/bare" ./bench/bare
go build -o "$work/coldstart" ./bench/coldstart
go build -o "$work/async" ./bench/async
go build -o "$work/wasmhost" ./bench/wasmhost
BARE=127.0.0.1:18181
GUST=127.0.0.1:18180
"$work/bare" -addr "$BARE" & pids+=($!)
"$work/gust" server --addr "$GUST" --data-dir "$work/data" --log-level warn 2>"$work/server.log" & pids+=($!)
for _ in $(seq 100); do curl -sf "http://$GUST/readyz" >/dev/null && curl -sf "http://$BARE/" >/dev/null && break; sleep 0.1; done

export GUST_URL="http://$GUST" GUST_KEY
GUST_KEY=$(cat "$work/data/admin.key")
# hello serves the load; hello-cold, recycled after every request, measures
# cold starts. Both are public, as in the quick start.
"$work/gust" deploy ./examples/hello >/dev/null
cat > "$work/gust.yaml" <<YAML
name: hello-cold
memory_mb: 64
auth: none
max_requests: 1
YAML
GOOS=wasip1 GOARCH=wasm go build -trimpath -buildmode=c-shared -o "$work/hello.wasm" ./examples/hello
"$work/gust" deploy "$work/hello.wasm" -f "$work/gust.yaml" >/dev/null

. bench/lib.sh
compare "gust SDK hello" "http://$BARE/" "http://$GUST/fn/default/hello"

WASMHOST=127.0.0.1:18183
"$work/wasmhost" -addr "$WASMHOST" -module "$work/hello.wasm" & pids+=($!)
for _ in $(seq 100); do curl -sf "http://$WASMHOST/" >/dev/null && break; sleep 0.1; done
echo "for reference, a host of the same module that does nothing else:"
compare "minimal wasm host" "http://$BARE/" "http://$WASMHOST/"

"$work/coldstart" -url "http://$GUST/fn/default/hello-cold" -warm-url "http://$GUST/fn/default/hello" -n 300
printf 'name: hello-first\nmemory_mb: 64\nauth: none\n' > "$work/hello-first.yaml"
first_after_deploy hello-first "$work/hello.wasm" "$work/hello-first.yaml"

echo
"$work/async" -url "http://$GUST" -fn /fn/default/hello -n 5000 -c 32
# At 5000/s, the 202's p99 turns on a few bursts a run: three rounds of 4
# seconds, and the median of their p99s.
for _ in 1 2 3; do
	"$work/async" -url "http://$GUST" -fn /fn/default/hello -n 20000 -c 64 -rate 5000 -warmup 5000
done | tee "$work/async.txt"
awk '/202 answered/ { for (i = 1; i < NF; i++) if ($i == "p99") { sub(/ms/, "", $(i+1)); print $(i+1) } }' "$work/async.txt" |
	sort -n | sed -n 2p | xargs printf "202 at 5000/s: p99 %s ms, median of 3 rounds\n"
