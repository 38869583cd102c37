#!/usr/bin/env bash
# The S3-facing tests on another S3 server: start it, run them, stop it.
#
#   bash scripts/test-s3.sh localstack [pytest args]
#   bash scripts/test-s3.sh ceph [pytest args]
#   bash scripts/test-s3.sh moto [pytest args]   # the same tests on moto (no server to start)
#
# The server is installed if missing and started on a free port by
# scripts/s3-server.sh, and stopped (by pid) when the tests end, whatever
# their outcome. Exits with pytest's status.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

server=${1:-}
shift || true
case "$server" in moto | localstack | ceph) ;; *) echo "usage: $0 moto|localstack|ceph [pytest args]" >&2; exit 2 ;; esac

# Plan, apply, undo, recover, the lock and its races, plans in S3, no trace,
# server differences: every test file whose outcome depends on the server.
S3_TESTS=(
    tests/test_s3.py
    tests/test_cli_plan.py
    tests/test_apply_undo.py
    tests/test_apply_gates.py
    tests/test_apply_live_gates.py
    tests/test_apply_crash.py
    tests/test_incident.py
    tests/test_lock.py
    tests/test_lock_versions.py
    tests/test_lock_release.py
    tests/test_plans_in_s3.py
    tests/test_store_versions.py
    tests/test_recover.py
    tests/test_undo_verified.py
    tests/test_server_differences.py
    tests/test_listing_xml.py
    tests/test_listing_subset.py
    tests/test_delete_requests.py
    tests/test_parallel_listing.py
    tests/test_inventory.py
)

if [[ "$server" != moto ]]; then
    started=$(date +%s.%N)
    # One more try if the server does not come up (a start that fails stops what it started).
    bash scripts/s3-server.sh "$server" start >/dev/null || bash scripts/s3-server.sh "$server" start >/dev/null
    trap 'bash scripts/s3-server.sh "$server" stop' EXIT
    echo "test-s3: $server started in $(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$started" "$(date +%s.%N)")s (install included)" >&2
fi
status=0
BMXGC_TEST_S3=$server bash scripts/test.sh -p no:cacheprovider "${S3_TESTS[@]}" "$@" || status=$?
exit "$status"
