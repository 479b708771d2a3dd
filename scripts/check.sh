#!/usr/bin/env bash
# `make check`: the harness's own tests in two passes, each with its slowest tests listed.
#
#   1. shared:     everything that can share this host's cores (units, plugin tests, the flat
#                  suite's end-to-end and broken-setup runs, SSH layer) on two xdist workers.
#                  Conformance cases that judge time still never run beside another harness QEMU:
#                  they take the host-wide timing lock (harness/isolation.py) in either pass.
#   2. whole host: tests marked `whole_host` (L1 hypervisors under TCG, in-process timing
#                  calibration, a case timed out mid-migration), one at a time with nothing beside them.
#
# Tests marked `check_full` (they add confidence, prove nothing new) are left to `make check-full`.
#
# Both passes run even when the first fails; the status is non-zero if either failed, and
# "no tests collected" (pytest's exit status 5) is a failure too.
# Usage: scripts/check.sh PYTEST [PYTEST-ARGS...]   (make check ARGS=... passes them to both passes)
set -uo pipefail

pytest=$1
shift
workers=${CHECK_WORKERS:-2}
common=(--durations=25 --durations-min=5 "$@")

run_pass() {
    local name=$1 start rc
    shift
    printf '\n== make check, pass %s: %s ==\n' "$name" "$*"
    start=$(date +%s)
    "$pytest" "$@" "${common[@]}"
    rc=$?
    passes+=("$(printf 'pass %-10s rc %d  %d min %02d s' "$name" "$rc" $((($(date +%s) - start) / 60)) \
        $((($(date +%s) - start) % 60)))")
    [ "$rc" -eq 0 ] || status=1
}

status=0
passes=()
# worksteal: an idle worker takes tests queued on the busy one (with plain load balancing one worker
# sat idle for 15 of the pass's 23 minutes behind the other's queue of long broken-setup runs).
run_pass shared tests -m "not whole_host and not check_full" -n "$workers" --dist worksteal
# The small guest kernel's test first: on a fresh machine it builds the kernel (its test allows an
# hour; the lab's cases, which run in a namespace without apt, and the nested ones then find it cached).
run_pass whole-host tests/e2e/test_small_kernel.py tests -m "whole_host and not check_full"
printf '\n== make check ==\n'
printf '%s\n' "${passes[@]}"
exit "$status"
