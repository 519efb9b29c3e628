#!/usr/bin/env bash
# Make sure the local services the test suite can use are answering (idempotent):
#
#   scripts/ensure_services.sh [redis] [postgres]     (no argument: both)
#
# redis:    something answers PING on 127.0.0.1:6379, else start
#           `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no`.
# postgres: the local cluster answers on 127.0.0.1:5432 (started with pg_ctlcluster
#           when it does not), user postgres can log in over TCP (trust, or the
#           password in PG_PASSWORD, default "postgres", which is set when needed),
#           and the database `test` exists (PG_DATABASE).
#
# Nothing here stops a service: what was running stays running, what this
# started keeps running for the next run (it is a CI/dev machine helper).
set -euo pipefail

REDIS_PORT=${REDIS_PORT:-6379}
PG_PORT=${PG_PORT:-5432}
PG_DATABASE=${PG_DATABASE:-test}
PG_PASSWORD=${PG_PASSWORD:-postgres}

log() { echo "ensure_services: $*"; }
die() { echo "ensure_services: $*" >&2; exit 1; }

wait_for() {  # wait_for SECONDS CMD...: poll CMD until it succeeds
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

port_open() {  # port_open PORT: something accepts TCP on 127.0.0.1:PORT
    timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

redis_ping() {
    [[ "$(timeout 3 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]
}

ensure_redis() {
    command -v redis-server >/dev/null || die "redis-server not installed (apt-get install redis-server)"
    if redis_ping; then
        log "redis answers on 127.0.0.1:$REDIS_PORT"
        return
    fi
    if port_open "$REDIS_PORT"; then
        die "127.0.0.1:$REDIS_PORT is taken by something that does not answer redis PING; free the port"
    fi
    log "starting redis-server on 127.0.0.1:$REDIS_PORT"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
        --logfile "${TMPDIR:-/tmp}/changegate-redis-$REDIS_PORT.log" >/dev/null
    wait_for 15 redis_ping || die "redis-server did not answer on 127.0.0.1:$REDIS_PORT"
}

pg_ready() {
    pg_isready -q -h 127.0.0.1 -p "$PG_PORT"
}

# psql as user postgres over TCP (what the tests do); PGPASSWORD is ignored under trust.
pg_tcp() {
    PGPASSWORD="$PG_PASSWORD" PGCONNECT_TIMEOUT=5 \
        psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -tAc "$1"
}

# psql as user postgres over the Unix socket (peer auth), to repair TCP access.
pg_local() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" -tAc "$1"
    else
        psql -X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" -U postgres -tAc "$1"
    fi
}

ensure_postgres() {
    command -v pg_isready >/dev/null || die "PostgreSQL client not installed (apt-get install postgresql)"
    if ! pg_ready; then
        local version
        version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
        [[ -n "$version" ]] || die "no PostgreSQL cluster in /etc/postgresql (apt-get install postgresql)"
        log "starting PostgreSQL $version/main"
        pg_ctlcluster --skip-systemctl-redirect "$version" main start
        wait_for 30 pg_ready || die "PostgreSQL did not answer on 127.0.0.1:$PG_PORT"
    fi
    if ! pg_tcp 'SELECT 1' >/dev/null 2>&1; then
        log "setting the password of user postgres for TCP logins"
        pg_local "ALTER USER postgres PASSWORD '$PG_PASSWORD'" >/dev/null
        pg_tcp 'SELECT 1' >/dev/null || die "user postgres cannot log in over TCP on 127.0.0.1:$PG_PORT (check pg_hba.conf)"
    fi
    if [[ "$(pg_tcp "SELECT 1 FROM pg_database WHERE datname = '$PG_DATABASE'")" != 1 ]]; then
        log "creating database $PG_DATABASE"
        pg_tcp "CREATE DATABASE \"$PG_DATABASE\"" >/dev/null
    fi
    log "PostgreSQL answers on 127.0.0.1:$PG_PORT, database $PG_DATABASE"
}

services=("$@")
[[ ${#services[@]} -gt 0 ]] || services=(redis postgres)
for service in "${services[@]}"; do
    case "$service" in
        redis) ensure_redis ;;
        postgres) ensure_postgres ;;
        *) die "unknown service $service (redis, postgres)" ;;
    esac
done
