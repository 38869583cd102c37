#!/usr/bin/env bash
# Install, start and stop the two other S3 servers the suite runs on.
#
#   scripts/s3-server.sh localstack start   # LocalStack 4.13.1 from PyPI, host mode, no Docker
#   scripts/s3-server.sh ceph start         # Ceph RGW from Debian packages, one-node memstore cluster
#   scripts/s3-server.sh localstack|ceph stop
#   scripts/s3-server.sh localstack|ceph env   # print the env of the running server
#
# "start" installs what is missing, starts the server on a free loopback port,
# waits until it answers S3 requests, writes STATE/NAME/env (shell lines the
# tests read: BMXGC_TEST_S3, BMXGC_TEST_S3_ENDPOINT and the credentials) and
# prints them. "stop" ends exactly the processes whose pids it wrote, and
# removes the server's data (nothing is kept between runs).
#
# STATE is $BMXGC_S3_STATE (default /tmp/bmxgc-s3); LocalStack's venv is kept
# in $BMXGC_S3_CACHE (default ~/.cache/bmxgc) so a second start skips the install.
set -euo pipefail

name=${1:-}
action=${2:-}
STATE=${BMXGC_S3_STATE:-/tmp/bmxgc-s3}
CACHE=${BMXGC_S3_CACHE:-${HOME:-/root}/.cache/bmxgc}
LOCALSTACK_VERSION=4.13.1

usage() {
    echo "usage: $0 localstack|ceph start|stop|env" >&2
    exit 2
}
case "$name" in localstack | ceph) ;; *) usage ;; esac
case "$action" in start | stop | env) ;; *) usage ;; esac
dir="$STATE/$name"

log() { echo "s3-server: $*" >&2; }
now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
secret() { python3 -c 'import secrets; print("aws-SECRET-" + secrets.token_hex(8))'; }

# wait_for URL SECONDS PID: until URL answers any HTTP status, or fail if PID died.
wait_for() {
    local url=$1 seconds=$2 pid=$3 i
    for ((i = 0; i < seconds * 5; i++)); do
        if python3 - "$url" <<'EOF' 2>/dev/null; then return 0; fi
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1], timeout=2)
except urllib.error.HTTPError:
    pass
EOF
        if ! kill -0 "$pid" 2>/dev/null; then
            log "the server process $pid died; see $dir/*.log"
            return 1
        fi
        sleep 0.2
    done
    log "$url did not answer within ${seconds}s; see $dir/*.log"
    return 1
}

stop_pids() {
    local pidfile pid i
    [[ -d "$dir" ]] || { log "$name: not running (no $dir)"; return 0; }
    # Stop in reverse start order (ceph: rgw, osd, mon).
    for pidfile in $(ls -r "$dir"/*.pid 2>/dev/null); do
        pid=$(cat "$pidfile")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$pidfile"
    done
    rm -rf "$dir"
    log "$name stopped"
}

write_env() { # endpoint access secret
    cat >"$dir/env" <<EOF
BMXGC_TEST_S3=$name
BMXGC_TEST_S3_ENDPOINT=$1
BMXGC_TEST_S3_ACCESS_KEY=$2
BMXGC_TEST_S3_SECRET_KEY=$3
EOF
    sed 's/^/export /' "$dir/env"
}

# --------------------------------------------------------------------------- LocalStack

localstack_start() {
    local venv="$CACHE/localstack-$LOCALSTACK_VERSION" t0 port pid
    t0=$(now)
    if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import localstack.runtime.main' 2>/dev/null; then
        log "installing LocalStack $LOCALSTACK_VERSION into $venv"
        rm -rf "$venv"
        python3 -m venv "$venv"
        # Each pin fixes one import error of 4.13.1 with today's PyPI; 4.14+ needs Python 3.12.
        "$venv/bin/pip" install -q --disable-pip-version-check "localstack-core[base-runtime]==$LOCALSTACK_VERSION" \
            'cbor2<6' 'pyopenssl<25' 'cryptography<45' service_identity
    fi
    local t_installed
    t_installed=$(elapsed "$t0")
    mkdir -p "$dir/volume" "$dir/root"
    port=$(free_port)
    (
        cd "$dir"
        exec env SERVICES=s3 EAGER_SERVICE_LOADING=1 GATEWAY_LISTEN="127.0.0.1:$port" \
            LOCALSTACK_HOST="127.0.0.1:$port" DNS_ADDRESS=0 SKIP_SSL_CERT_DOWNLOAD=1 DISABLE_EVENTS=1 \
            LOCALSTACK_VOLUME_DIR="$dir/volume" FILESYSTEM_ROOT="$dir/root" \
            "$venv/bin/python" -m localstack.runtime.main
    ) >"$dir/localstack.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$dir/1-localstack.pid"
    local t1 i
    t1=$(now)
    for ((i = 0; i < 300; i++)); do
        if python3 - "http://127.0.0.1:$port/_localstack/health" <<'EOF' 2>/dev/null; then break; fi
import json, sys, urllib.request
state = json.load(urllib.request.urlopen(sys.argv[1], timeout=2))["services"]["s3"]
sys.exit(0 if state in ("running", "available") else 1)
EOF
        kill -0 "$pid" 2>/dev/null || { log "LocalStack died; see $dir/localstack.log"; tail -20 "$dir/localstack.log" >&2; exit 1; }
        sleep 0.2
    done
    ((i < 300)) || { log "LocalStack not ready in 60s; see $dir/localstack.log"; exit 1; }
    log "LocalStack ready on 127.0.0.1:$port (install ${t_installed}s, start $(elapsed "$t1")s, total $(elapsed "$t0")s)"
    write_env "http://127.0.0.1:$port" testing "$(secret)"
}

# --------------------------------------------------------------------------- Ceph RGW

ceph_start() {
    local t0 t_installed mon_port rgw_port fsid conf osd_uuid
    t0=$(now)
    if ! command -v radosgw >/dev/null || ! command -v ceph-mon >/dev/null || ! command -v ceph-osd >/dev/null \
        || ! command -v radosgw-admin >/dev/null; then
        log "installing Ceph (radosgw ceph-mon ceph-osd ceph-common) from Debian"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends radosgw ceph-mon ceph-osd ceph-common >/dev/null
    fi
    t_installed=$(elapsed "$t0")
    mkdir -p "$dir/run" "$dir/log" "$dir/mon/ceph-a" "$dir/osd/ceph-0"
    mon_port=$(free_port)
    rgw_port=$(free_port)
    fsid=$(python3 -c 'import uuid; print(uuid.uuid4())')
    conf="$dir/ceph.conf"
    cat >"$conf" <<EOF
[global]
fsid = $fsid
mon host = v1:127.0.0.1:$mon_port
mon initial members = a
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = false
osd objectstore = memstore
memstore device bytes = 2147483648
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
osd max object name len = 256
osd max object namespace len = 64
run dir = $dir/run
admin socket = $dir/run/\$name.asok
log file = $dir/log/\$name.log
keyring = $dir/keyring
mon data = $dir/mon/\$cluster-\$id
osd data = $dir/osd/\$cluster-\$id
[mon.a]
public addr = 127.0.0.1:$mon_port
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw data = $dir/rgw
rgw enable usage log = false
EOF
    export CEPH_CONF="$conf"
    local t1
    t1=$(now)
    monmaptool --create --clobber --fsid "$fsid" --addv a "[v1:127.0.0.1:$mon_port]" "$dir/monmap" >/dev/null
    : >"$dir/keyring"
    ceph-mon --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/keyring" >"$dir/log/mkfs-mon.out" 2>&1
    ceph-mon -f -i a >"$dir/log/mon.out" 2>&1 </dev/null &
    echo $! >"$dir/1-mon.pid"
    local i
    for ((i = 0; i < 150; i++)); do
        timeout 5 ceph --connect-timeout 3 mon stat >/dev/null 2>&1 && break
        sleep 0.2
    done
    osd_uuid=$(python3 -c 'import uuid; print(uuid.uuid4())')
    timeout 30 ceph osd new "$osd_uuid" >/dev/null
    ceph-osd -i 0 --mkfs --osd-uuid "$osd_uuid" >"$dir/log/mkfs-osd.out" 2>&1
    ceph-osd -f -i 0 >"$dir/log/osd.out" 2>&1 </dev/null &
    echo $! >"$dir/2-osd.pid"
    for ((i = 0; i < 300; i++)); do
        timeout 5 ceph osd stat 2>/dev/null | grep -q '1 up' && break
        kill -0 "$(cat "$dir/2-osd.pid")" 2>/dev/null || { log "ceph-osd died; see $dir/log/osd.out"; exit 1; }
        sleep 0.2
    done
    ((i < 300)) || { log "ceph-osd not up in 60s; see $dir/log/osd.out"; exit 1; }
    mkdir -p "$dir/rgw"
    radosgw -f -n client.rgw.a >"$dir/log/rgw.out" 2>&1 </dev/null &
    echo $! >"$dir/3-rgw.pid"
    wait_for "http://127.0.0.1:$rgw_port/" 120 "$(cat "$dir/3-rgw.pid")"
    local key
    key=$(secret)
    timeout 60 radosgw-admin user create --uid=bmxgc --display-name=bmxgc \
        --access-key=testing --secret-key="$key" >/dev/null
    log "Ceph RGW ready on 127.0.0.1:$rgw_port (install ${t_installed}s, start $(elapsed "$t1")s, total $(elapsed "$t0")s)"
    write_env "http://127.0.0.1:$rgw_port" testing "$key"
}

# --------------------------------------------------------------------------- main

case "$action" in
stop) stop_pids ;;
env)
    [[ -f "$dir/env" ]] || { log "$name is not running (no $dir/env)"; exit 1; }
    sed 's/^/export /' "$dir/env"
    ;;
start)
    if [[ -d "$dir" ]]; then
        # A server started before (or a start that was killed half-way): stop
        # what its pid files name and start from an empty folder, so no old
        # cluster's data (another fsid) is ever picked up.
        log "$name: $dir exists; stopping what it started first"
        stop_pids
    fi
    mkdir -p "$dir"
    trap 'rc=$?; if ((rc != 0)); then log "start failed; stopping what started (logs kept in $STATE/$name.failed)"; rm -rf "$STATE/$name.failed"; mkdir -p "$STATE/$name.failed"; cp -r "$dir"/log "$dir"/*.log "$STATE/$name.failed/" 2>/dev/null; tail -n 15 "$dir"/log/*.out "$dir"/*.log 2>/dev/null >&2; stop_pids; fi' EXIT
    "${name}_start"
    ;;
esac
