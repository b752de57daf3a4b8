#!/usr/bin/env bash
# A scaled-out Skybook on one machine, on loopback:
#
#   nginx :8080  ->  skybook api :8001, :8002          (HTTP, no in-process event delivery)
#                    skybook relay                      (outbox -> Kafka + RabbitMQ)
#                    skybook worker x2                  (consumers, effects once through the inbox)
#   PostgreSQL (database skybook_cluster), Redis, RabbitMQ, Kafka-protocol mock (kafka_mock.py)
#   RabbitMQ is reached through a loopback proxy (tcp_proxy.py, :5673) that a fault run can cut.
#
#   deploy/cluster/cluster.sh start | stop | status
#   deploy/cluster/cluster.sh kill NAME | revive NAME        (faults: SIGKILL one process, start it again)
#   deploy/cluster/cluster.sh amqp-cut | amqp-restore         (faults: RabbitMQ unreachable, and back)
#
# Every port and name is a variable (GATEWAY_PORT, API_PORTS, METRICS_PORT_BASE, AMQP_PROXY_PORT,
# CLUSTER_DB, REDIS_URL, CLUSTER_DIR, SKYBOOK_BROKER_PREFIX ...), so two clusters can share a machine.
#
# Every process started here writes its PID to $CLUSTER_DIR/<name>.pid and its output to
# $CLUSTER_DIR/logs/<name>.log; `stop` ends exactly those PIDs (after checking each still runs
# the command it was started with) and nothing else. PostgreSQL, Redis and RabbitMQ are expected
# to be running already (they are shared services); the script checks that they answer.
#
# Until `skybook relay` and `skybook worker` exist (event backbone), the API processes deliver
# events in-process instead (SKYBOOK_RUN_WORKERS=true), which the status line says.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
# The cluster runs this checkout's sources, whichever environment provides the dependencies.
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"

CLUSTER_DIR="${CLUSTER_DIR:-var/cluster}"
PYTHON="${PYTHON:-.venv/bin/python}"
API_PORTS="${API_PORTS:-8001 8002}"
WORKERS="${WORKERS:-2}"
GATEWAY_PORT="${GATEWAY_PORT:-8080}"
METRICS_PORT_BASE="${METRICS_PORT_BASE:-9100}"   # relay 9100, workers 9101, 9102, ...
PG_ADMIN_URL="${PG_ADMIN_URL:-postgresql://root@127.0.0.1:5432/root}"
CLUSTER_DB="${CLUSTER_DB:-skybook_cluster}"
CLUSTER_RESET="${CLUSTER_RESET:-0}"              # 1: drop and re-create the database first
SEED_DAYS="${SEED_DAYS:-14}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/2}"
RABBITMQ_URL="${RABBITMQ_URL:-amqp://guest:guest@127.0.0.1:5672/}"  # pragma: allowlist secret
AMQP_PROXY_PORT="${AMQP_PROXY_PORT:-5673}"       # the cluster's way to RabbitMQ (0: connect directly)
NGINX="${NGINX:-nginx}"

LOGS="$CLUSTER_DIR/logs"
skybook() { "$PYTHON" -m skybook.cli "$@"; }
log() { printf '[cluster] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

pg_db_url() {
    # postgresql://user@host:port/admin_db -> postgresql+asyncpg://user@host:port/$CLUSTER_DB
    local base="${PG_ADMIN_URL%/*}"
    printf 'postgresql+asyncpg://%s/%s' "${base#postgresql://}" "$CLUSTER_DB"
}

rabbitmq_hostport() {  # the host:port of RABBITMQ_URL (after the credentials, before the vhost)
    local hp="${RABBITMQ_URL#*://}"; hp="${hp#*@}"; hp="${hp%%/*}"
    [[ "$hp" == *:* ]] || hp="$hp:5672"
    printf '%s' "$hp"
}

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# start NAME CMD...: run CMD in the background with its own log and PID file.
start_proc() {
    local name="$1"; shift
    if alive "$CLUSTER_DIR/$name.pid"; then
        die "$name is already running (PID $(cat "$CLUSTER_DIR/$name.pid")); run cluster-stop first"
    fi
    # setsid: the process leads its own group, so a Ctrl-C in this shell does not reach it.
    setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
    echo $! >"$CLUSTER_DIR/$name.pid"
    # Remember what it runs (its last two arguments), so stop never signals a recycled PID.
    printf '%s %s' "${@: -2:1}" "${@: -1}" >"$CLUSTER_DIR/$name.cmd"
    log "started $name (PID $!)"
}

wait_http() {  # URL SECONDS
    local url="$1" deadline=$((SECONDS + $2))
    until curl -fsS -o /dev/null "$url" 2>/dev/null; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}

check_services() {
    psql "$PG_ADMIN_URL" -qAtc 'SELECT 1' >/dev/null || die "PostgreSQL does not answer at $PG_ADMIN_URL"
    local redis_hostport="${REDIS_URL#redis://}"; redis_hostport="${redis_hostport%%/*}"
    redis-cli -h "${redis_hostport%:*}" -p "${redis_hostport#*:}" ping >/dev/null || die "Redis does not answer at $REDIS_URL"
    local amqp; amqp="$(rabbitmq_hostport)"
    (exec 3<>"/dev/tcp/${amqp%:*}/${amqp#*:}") 2>/dev/null || die "RabbitMQ does not answer on $amqp"
    command -v "$NGINX" >/dev/null || die "nginx is not installed (apt-get install -y nginx)"
}

prepare_database() {
    if [[ "$CLUSTER_RESET" == 1 ]]; then
        log "dropping database $CLUSTER_DB"
        psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS \"$CLUSTER_DB\" WITH (FORCE)"
    fi
    if [[ -z "$(psql "$PG_ADMIN_URL" -qAtc "SELECT 1 FROM pg_database WHERE datname = '$CLUSTER_DB'")" ]]; then
        psql "$PG_ADMIN_URL" -qc "CREATE DATABASE \"$CLUSTER_DB\""
    fi
    skybook db upgrade >>"$LOGS/setup.log" 2>&1 || die "db upgrade failed (see $LOGS/setup.log)"
    skybook seed demo --days "$SEED_DAYS" >>"$LOGS/setup.log" 2>&1 || die "seed failed (see $LOGS/setup.log)"
}

write_nginx_conf() {
    local prefix="$CLUSTER_DIR/nginx" servers="" port
    mkdir -p "$prefix/conf" "$prefix/logs" "$prefix/tmp"
    for port in $API_PORTS; do
        servers+="        server 127.0.0.1:$port max_fails=2 fail_timeout=5s;\n"
    done
    # The shipped config with this cluster's upstreams, body size and gateway port.
    awk -v servers="$servers" -v body="${SKYBOOK_MAX_BODY_BYTES:-262144}" -v gw="$GATEWAY_PORT" '
        /# @generated api servers/ { if (!done) { printf "%s", servers; done = 1 } next }
        /# @generated from SKYBOOK_MAX_BODY_BYTES/ { sub(/client_max_body_size [0-9]+;/, "client_max_body_size " body ";") }
        /listen 127\.0\.0\.1:8080/ { sub(/8080/, gw) }
        { print }
    ' deploy/nginx/nginx.conf >"$prefix/conf/nginx.conf"
    "$NGINX" -t -q -p "$prefix" -c conf/nginx.conf 2>>"$LOGS/nginx.log" || die "nginx config test failed (see $LOGS/nginx.log)"
}

# Settings shared by every Skybook process of the cluster (all SKYBOOK_* variables); `revive`
# uses them too, so a restarted process runs with exactly the settings of the first start.
cluster_settings() {
    local secret_file="$CLUSTER_DIR/secret_key"
    [[ -s "$secret_file" ]] || "$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(48))' >"$secret_file"
    export SKYBOOK_DATABASE_URL; SKYBOOK_DATABASE_URL="$(pg_db_url)"
    export SKYBOOK_REDIS_URL="$REDIS_URL"
    if [[ "$AMQP_PROXY_PORT" != 0 ]]; then
        export SKYBOOK_RABBITMQ_URL="${RABBITMQ_URL/@$(rabbitmq_hostport)/@127.0.0.1:$AMQP_PROXY_PORT}"
    else
        export SKYBOOK_RABBITMQ_URL="$RABBITMQ_URL"
    fi
    export SKYBOOK_BROKER_PREFIX="${SKYBOOK_BROKER_PREFIX:-skybook}"
    export SKYBOOK_SECRET_KEY; SKYBOOK_SECRET_KEY="$(cat "$secret_file")"
    export SKYBOOK_DATA_DIR="$CLUSTER_DIR/data"
    export SKYBOOK_LOG_FORMAT="${SKYBOOK_LOG_FORMAT:-json}"
    export SKYBOOK_DOCS_ENABLED=false
    # A fixed pool per process (no overflow by default): 5 processes x 8 = 40 connections, plus
    # one LISTEN connection per API process and the relay's, under half of PostgreSQL's default
    # max_connections (100), which the machine's other work shares.
    export SKYBOOK_DATABASE_POOL_SIZE="${SKYBOOK_DATABASE_POOL_SIZE:-8}"
    # The demo accounts (used by the scorecard to provision its tenants) exist only in development.
    export SKYBOOK_ENVIRONMENT="${SKYBOOK_ENVIRONMENT:-development}"
    mkdir -p "$SKYBOOK_DATA_DIR"
    kafka_settings
}

# The Kafka settings, once the mock has written its address: `start` calls this again after
# starting the mock (the address of a stopped cluster is gone), `revive` through cluster_settings.
kafka_settings() {
    [[ -s "$CLUSTER_DIR/kafka.address" ]] || return 0
    export SKYBOOK_KAFKA_BOOTSTRAP_SERVERS; SKYBOOK_KAFKA_BOOTSTRAP_SERVERS="$(cat "$CLUSTER_DIR/kafka.address")"
    # librdkafka's mock cluster holds every fetch for the whole fetch.wait.max.ms, where a real
    # broker answers as soon as a record is there; with the default 100 ms each stream hop
    # would look 100 ms slower than it is. A real deployment keeps the default.
    export SKYBOOK_KAFKA_FETCH_WAIT_MAX_MS="${SKYBOOK_KAFKA_FETCH_WAIT_MAX_MS:-5}"
}

start_relay() { SKYBOOK_BACKBONE_METRICS_PORT="$METRICS_PORT_BASE" start_proc relay "$PYTHON" -m skybook.cli relay; }
start_worker() {  # N
    SKYBOOK_BACKBONE_METRICS_PORT=$((METRICS_PORT_BASE + $1)) start_proc "worker-$1" "$PYTHON" -m skybook.cli worker
}
start_api() {  # PORT BACKBONE COMMAND (api, or serve in builds before `skybook api`)
    SKYBOOK_RUN_WORKERS=$(($2 ? 0 : 1)) start_proc "api-$1" "$PYTHON" -m skybook.cli "$3" --port "$1"
}

cmd_start() {
    mkdir -p "$LOGS"
    check_services
    cluster_settings

    if [[ "$AMQP_PROXY_PORT" != 0 ]]; then
        local amqp; amqp="$(rabbitmq_hostport)"
        rm -f "$CLUSTER_DIR/amqp-proxy.port"
        start_proc amqp-proxy "$PYTHON" deploy/cluster/tcp_proxy.py --listen "127.0.0.1:$AMQP_PROXY_PORT" \
            --target "$amqp" --port-file "$CLUSTER_DIR/amqp-proxy.port"
        local deadline=$((SECONDS + 10))
        until [[ -s "$CLUSTER_DIR/amqp-proxy.port" ]]; do
            ((SECONDS < deadline)) || die "the RabbitMQ proxy did not start (see $LOGS/amqp-proxy.log)"
            sleep 0.1
        done
        log "RabbitMQ through the proxy at 127.0.0.1:$AMQP_PROXY_PORT -> $amqp"
    fi

    rm -f "$CLUSTER_DIR/kafka.address"
    start_proc kafka "$PYTHON" deploy/cluster/kafka_mock.py --brokers 1 --address-file "$CLUSTER_DIR/kafka.address"
    local deadline=$((SECONDS + 20))
    until [[ -s "$CLUSTER_DIR/kafka.address" ]]; do
        ((SECONDS < deadline)) || die "the Kafka mock did not start (see $LOGS/kafka.log)"
        sleep 0.2
    done
    kafka_settings
    log "Kafka mock at $SKYBOOK_KAFKA_BOOTSTRAP_SERVERS (workers' fetch wait $SKYBOOK_KAFKA_FETCH_WAIT_MAX_MS ms)"

    prepare_database

    local backbone=0
    if skybook relay --help >/dev/null 2>&1 && skybook worker --help >/dev/null 2>&1; then
        backbone=1
        start_relay
        local i
        for ((i = 1; i <= WORKERS; i++)); do start_worker "$i"; done
    else
        log "no 'skybook relay' / 'skybook worker' in this build: the API processes deliver events in-process"
    fi

    local port api_cmd=serve
    if skybook api --help >/dev/null 2>&1; then api_cmd=api; fi
    for port in $API_PORTS; do start_api "$port" "$backbone" "$api_cmd"; done
    for port in $API_PORTS; do
        wait_http "http://127.0.0.1:$port/ready" 60 || die "api on :$port is not ready (see $LOGS/api-$port.log)"
    done

    write_nginx_conf
    start_proc nginx "$NGINX" -p "$CLUSTER_DIR/nginx" -c conf/nginx.conf -g 'daemon off;'
    wait_http "http://127.0.0.1:$GATEWAY_PORT/ready" 20 || die "the gateway does not answer (see $LOGS/nginx.log)"

    # What the scorecard and the audit need to reach this cluster.
    {
        echo "SKYBOOK_DATABASE_URL=$SKYBOOK_DATABASE_URL"
        echo "SKYBOOK_REDIS_URL=$SKYBOOK_REDIS_URL"
        echo "SKYBOOK_RABBITMQ_URL=$SKYBOOK_RABBITMQ_URL"
        echo "SKYBOOK_KAFKA_BOOTSTRAP_SERVERS=$SKYBOOK_KAFKA_BOOTSTRAP_SERVERS"
        echo "SKYBOOK_KAFKA_FETCH_WAIT_MAX_MS=$SKYBOOK_KAFKA_FETCH_WAIT_MAX_MS"
        echo "SKYBOOK_DATA_DIR=$SKYBOOK_DATA_DIR"
        echo "SKYBOOK_BROKER_PREFIX=$SKYBOOK_BROKER_PREFIX"
        echo "SKYBOOK_BACKBONE=$backbone"
        echo "API_CMD=$api_cmd"
        echo "GATEWAY_URL=http://127.0.0.1:$GATEWAY_PORT"
        echo "API_PORTS=${API_PORTS// /,}"
        echo "METRICS_PORT_BASE=$METRICS_PORT_BASE"
        echo "WORKERS=$WORKERS"
        echo "AMQP_PROXY_PORT=$AMQP_PROXY_PORT"
    } >"$CLUSTER_DIR/cluster.env"
    log "gateway http://127.0.0.1:$GATEWAY_PORT ; api ${API_PORTS// /, } ; backbone=$([[ $backbone == 1 ]] && echo "relay + $WORKERS workers" || echo "in-process")"
    log "metrics: http://127.0.0.1:<api port>/metrics$([[ $backbone == 1 ]] && echo ", relay :$METRICS_PORT_BASE, workers :$((METRICS_PORT_BASE + 1))..")"
}

# owned_pid NAME: print the PID of NAME if it runs and still runs the command we started it with.
owned_pid() {
    local name="$1" pidfile="$CLUSTER_DIR/$1.pid" pid expected actual
    [[ -f "$pidfile" ]] || return 1
    pid="$(cat "$pidfile")"
    kill -0 "$pid" 2>/dev/null || return 1
    expected="$(cat "$CLUSTER_DIR/$name.cmd" 2>/dev/null || true)"
    actual="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
    if [[ -n "$expected" && "$actual" != *"$expected"* ]]; then
        log "PID $pid no longer runs $name; leaving it alone"
        return 1
    fi
    printf '%s' "$pid"
}

# stop_pid NAME: TERM, wait up to 15 s, then KILL; only if the PID still runs what we started.
stop_pid() {
    local name="$1" pidfile="$CLUSTER_DIR/$1.pid" pid
    [[ -f "$pidfile" ]] || return 0
    pid="$(owned_pid "$name" || true)"
    if [[ -n "$pid" ]]; then
        kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + 15))
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name (PID $pid) ignored TERM for 15 s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        log "stopped $name (PID $pid)"
    fi
    rm -f "$pidfile" "$CLUSTER_DIR/$name.cmd"
}

cmd_stop() {
    [[ -d "$CLUSTER_DIR" ]] || { log "nothing to stop"; return 0; }
    local f name
    # Gateway first (no new requests), then the API, then relay and workers (they drain), then Kafka.
    stop_pid nginx
    for f in "$CLUSTER_DIR"/api-*.pid; do [[ -e "$f" ]] && { name="${f##*/}"; stop_pid "${name%.pid}"; }; done
    stop_pid relay
    for f in "$CLUSTER_DIR"/worker-*.pid; do [[ -e "$f" ]] && { name="${f##*/}"; stop_pid "${name%.pid}"; }; done
    stop_pid kafka
    stop_pid amqp-proxy
    for f in "$CLUSTER_DIR"/*.pid; do [[ -e "$f" ]] && { name="${f##*/}"; stop_pid "${name%.pid}"; }; done
    rm -f "$CLUSTER_DIR/kafka.address" "$CLUSTER_DIR/amqp-proxy.port"
}

# Faults (bench/scorecard/faults.py): a crash, as the kernel's OOM killer or a power cut would do it.
cmd_kill() {  # NAME
    local pid
    pid="$(owned_pid "$1")" || die "$1 is not running"
    kill -KILL "$pid"
    local deadline=$((SECONDS + 10))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.05; done
    rm -f "$CLUSTER_DIR/$1.pid" "$CLUSTER_DIR/$1.cmd"
    log "killed $1 (PID $pid, SIGKILL)"
}

cmd_revive() {  # NAME: start a killed process again, with the settings of the first start
    [[ -s "$CLUSTER_DIR/cluster.env" ]] || die "no cluster is running here ($CLUSTER_DIR/cluster.env is missing)"
    cluster_settings
    local backbone api_cmd
    backbone="$(sed -n 's/^SKYBOOK_BACKBONE=//p' "$CLUSTER_DIR/cluster.env")"
    api_cmd="$(sed -n 's/^API_CMD=//p' "$CLUSTER_DIR/cluster.env")"
    case "$1" in
        relay) start_relay ;;
        worker-*) start_worker "${1#worker-}" ;;
        api-*) start_api "${1#api-}" "${backbone:-1}" "${api_cmd:-api}" ;;
        *) die "cannot revive $1 (relay, worker-N and api-PORT can be revived)" ;;
    esac
}

cmd_amqp() {  # cut | restore
    local pid
    pid="$(owned_pid amqp-proxy)" || die "the RabbitMQ proxy is not running"
    if [[ "$1" == cut ]]; then kill -USR1 "$pid"; else kill -USR2 "$pid"; fi
    log "RabbitMQ proxy: $1"
}

cmd_status() {
    local f name
    for f in "$CLUSTER_DIR"/*.pid; do
        [[ -e "$f" ]] || continue
        name="${f##*/}"; name="${name%.pid}"
        if alive "$f"; then echo "$name running (PID $(cat "$f"))"; else echo "$name not running (stale PID file)"; fi
    done
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    kill) cmd_kill "${2:?usage: $0 kill NAME}" ;;
    revive) mkdir -p "$LOGS"; cmd_revive "${2:?usage: $0 revive NAME}" ;;
    amqp-cut) cmd_amqp cut ;;
    amqp-restore) cmd_amqp restore ;;
    *) echo "usage: $0 start|stop|status|kill NAME|revive NAME|amqp-cut|amqp-restore" >&2; exit 2 ;;
esac
