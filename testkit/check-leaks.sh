#!/usr/bin/env bash
# Leak check for the test kit: runs `cargo test -p testkit` twice in a row, then fails if any
# server the kit started is still running, if a new TCP listener is left in the kit's port window,
# or if a server folder of a finished test process is left in the temp folder.
#   usage: testkit/check-leaks.sh [extra cargo test args]   (CHECK_LEAKS_RUNS=n: n runs, default 2)
set -euo pipefail
cd "$(dirname "$0")/.."

low=20000
high=$(( $(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range) - 1 ))

# Listening TCP ports (IPv4 and IPv6) inside the kit's window, one per line.
listeners() {
  local hex p
  for hex in $(awk 'FNR > 1 && $4 == "0A" { split($2, a, ":"); print a[2] }' \
                 /proc/net/tcp /proc/net/tcp6 2>/dev/null); do
    p=$((16#$hex))
    if [ "$p" -ge "$low" ] && [ "$p" -le "$high" ]; then echo "$p"; fi
  done | sort -un
}

# Live (non-zombie) processes started by the kit whose owning test process is gone. Every server
# runs in its folder `tumbler-testkit.<owner pid>.*`, so its cwd names its owner. (The kit also
# sets TUMBLER_TESTKIT_OWNER, but redis-server overwrites its environ with its process title.)
strays() {
  local cwd_link pid cwd owner state
  for cwd_link in /proc/[0-9]*/cwd; do
    pid=${cwd_link#/proc/}; pid=${pid%/cwd}
    cwd=$(readlink "$cwd_link" 2>/dev/null) || continue
    case "$cwd" in */tumbler-testkit.*) ;; *) continue ;; esac
    owner=${cwd##*/tumbler-testkit.}; owner=${owner%%.*}
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || continue
    [ "$state" = Z ] && continue
    [ -d "/proc/$owner" ] && continue   # its test is still running (another run): not ours
    echo "  pid $pid (owner $owner gone, cwd $cwd): $(tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline" | cut -c1-160)"
  done
}

# Server folders of test processes that no longer exist.
stale_dirs() {
  for d in "${TMPDIR:-/tmp}"/tumbler-testkit.*; do
    [ -e "$d" ] || continue
    pid=$(basename "$d" | cut -d. -f2)
    [ -d "/proc/$pid" ] || echo "  $d"
  done
}

before=$(listeners)
for run in $(seq 1 "${CHECK_LEAKS_RUNS:-2}"); do
  echo "check-leaks: cargo test -p testkit, run $run"
  cargo test -p testkit "$@"
done

fail=0
left=$(strays)
if [ -n "$left" ]; then echo "check-leaks: server processes left behind:"; echo "$left"; fail=1; fi
new=$(comm -13 <(echo "$before") <(listeners))
if [ -n "$new" ]; then
  echo "check-leaks: new listening ports in $low..$high (another program may own them):"
  for p in $new; do echo "  $p: $(ss -ltnpH "sport = :$p" 2>/dev/null | awk '{print $NF}')"; done
  fail=1
fi
dirs=$(stale_dirs)
if [ -n "$dirs" ]; then echo "check-leaks: server folders left behind:"; echo "$dirs"; fail=1; fi
[ "$fail" = 0 ] && echo "check-leaks: no server process, listening port or folder left behind"
exit "$fail"
