# Shared by the benchmark scripts: source it after setting $secs.

# wrk prints "Requests/sec:" and, with --latency, the percentiles.
run() { wrk -t"$(( $2 < 2 ? 1 : 2 ))" -c"$2" -d"${secs}s" --latency "$1" 2>&1; }
field() { awk -v k="$1" '$1 == k { print $2 }'; }
ms() { awk '{ v=$1; if (v ~ /us$/) { sub(/us/,"",v); v/=1000 } else if (v ~ /ms$/) { sub(/ms/,"",v) } else if (v ~ /s$/) { sub(/s/,"",v); v*=1000 }; printf "%.3f", v }'; }

# compare LABEL BARE_URL GUST_URL: the same wrk load at 32 connections and at
# 1 (or at each of $conns) on the bare server and on Gust, in $rounds
# alternating rounds (default 3: this machine is noisy, and a neighbour's
# burst lands on one round, not on one side), each round's figures, and the
# median of Gust's ratios to the bare server.
compare() {
	printf "\n%-30s %12s %10s %10s\n" "load" "requests/s" "p50 ms" "p99 ms"
	for c in ${conns:-32 1}; do
		run "$3" "$c" >/dev/null  # warm-up: instances and connections
		ratios=""
		for _ in $(seq "${rounds:-3}"); do
			b=$(run "$2" "$c")
			g=$(run "$3" "$c")
			brps=$(echo "$b" | field Requests/sec:); grps=$(echo "$g" | field Requests/sec:)
			b50=$(echo "$b" | field 50% | ms); b99=$(echo "$b" | field 99% | ms)
			g50=$(echo "$g" | field 50% | ms); g99=$(echo "$g" | field 99% | ms)
			printf "%-30s %12s %10s %10s\n" "bare net/http, c=$c" "$brps" "$b50" "$b99"
			printf "%-30s %12s %10s %10s\n" "$1, c=$c" "$grps" "$g50" "$g99"
			ratios="$ratios$(awk -v g="$grps" -v b="$brps" -v g50="$g50" -v b50="$b50" 'BEGIN { printf "%.3f %.3f", g/b, g50/b50 }')
"
		done
		n=$(echo "$ratios" | grep -c .)
		median() { echo "$ratios" | grep . | cut -d' ' -f"$1" | sort -n | sed -n "$(( (n + 1) / 2 ))p"; }
		printf "ratio at c=%s, median of %d rounds: throughput %.2fx of bare, p50 %.2fx of bare\n\n" "$c" "$n" "$(median 1)" "$(median 2)"
	done
}

# first_after_deploy NAME ARTIFACT SPEC [N]: deploys ARTIFACT (a .wasm file,
# or a process function's folder) with the spec SPEC, whose env gets a new
# ROUND each time so that each deploy is a new version, N times (default
# 20), and prints the p50 and p99 of how long the first request after each
# deploy took to start its instance (Server-Timing init), a second after
# the deploy, as a person trying it would send it.
first_after_deploy() {
	local inits="" spec="$work/first.yaml" args=("$2" -f "$work/first.yaml")
	if [ -d "$2" ]; then
		spec="$2/gust.yaml" args=("$2")
	fi
	for i in $(seq "${4:-20}"); do
		{ cat "$3"; printf 'env:\n  ROUND: "%s"\n' "$i"; } > "$spec"
		"$work/gust" deploy "${args[@]}" >/dev/null
		sleep 1
		inits="$inits$(curl -s -o /dev/null -D - "$GUST_URL/fn/default/$1" | tr -d '\r' |
			sed -n 's/^Server-Timing: .*init;dur=\([0-9.]*\).*/\1/Ip')
"
	done
	echo "$inits" | grep . | sort -n | awk -v name="$1" '{ v[NR] = $1 } END {
		printf "first request after a deploy of %s (%d deploys): start p50 %.2fms  p99 %.2fms\n", name, NR, v[int((NR + 1) / 2)], v[NR] }'
}
