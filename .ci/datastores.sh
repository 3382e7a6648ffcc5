#!/usr/bin/env bash
# Real PostgreSQL 15 and Redis for the studio server's tests (persistence, several instances over Redis Streams).
# Reuses servers that answer at the exported URLs, else installs the Debian packages when missing and starts
# throwaway ones on loopback ports (data in a temp folder, nothing saved), and exports:
#   DIRECTOR_LINK_TEST_POSTGRES   postgresql://postgres:PASSWORD@127.0.0.1:PORT/postgres (password auth on)
#   DIRECTOR_LINK_TEST_REDIS      redis://127.0.0.1:PORT
#
#   source .ci/datastores.sh                   # from .ci/run or a shell: start (or reuse) and export
#   bash .ci/datastores.sh stop                # stops the servers this script started (state in $root)
#   bash .ci/datastores.sh start-postgres DIR PORT PASSWORD   # one more throwaway cluster (tests that stop it)
#   bash .ci/datastores.sh stop-postgres DIR
#
# State (ports, password, data) lives in $DIRECTOR_LINK_DATASTORES (default ~/.cache/director-link/datastores).
# Everything binds 127.0.0.1 only.

_dl_pg_bin() {
    local d
    for d in /usr/lib/postgresql/15/bin /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && { echo "$d"; return 0; }
    done
    command -v initdb >/dev/null && { dirname "$(command -v initdb)"; return 0; }
    return 1
}

_dl_as_owner() {
    # initdb and postgres refuse to run as root: run them as the `postgres` user the Debian package creates.
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

_dl_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

_dl_install() {
    local missing=()
    _dl_pg_bin >/dev/null || missing+=(postgresql)
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v psql >/dev/null || missing+=(postgresql-client)
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "datastores: installing ${missing[*]}"
    if [ "$(id -u)" != 0 ]; then
        echo "datastores: not root; install ${missing[*]} yourself (apt-get install ${missing[*]})" >&2
        return 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
        return 1
    # The package starts a cluster and a Redis on the default ports; the tests use their own throwaway ones.
    return 0
}

# start-postgres DIR PORT PASSWORD: a new cluster in DIR (created, owned by the server's user), on 127.0.0.1:PORT.
_dl_start_postgres() {
    local dir="$1" port="$2" password="$3" bin
    bin="$(_dl_pg_bin)" || { echo "datastores: no PostgreSQL binaries" >&2; return 1; }
    mkdir -p "$dir" || return 1
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    chmod 700 "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        printf '%s\n' "$password" >"$dir/pwfile"
        [ "$(id -u)" = 0 ] && chown postgres: "$dir/pwfile"
        _dl_as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=scram-sha-256 --pwfile="$dir/pwfile" \
            -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; return 1; }
        rm -f "$dir/pwfile"
    fi
    _dl_as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off" start >/dev/null ||
        { cat "$dir/server.log" >&2; return 1; }
}

_dl_stop_postgres() {
    local dir="$1" bin
    bin="$(_dl_pg_bin)" || return 0
    [ -f "$dir/data/postmaster.pid" ] && _dl_as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    return 0
}

_dl_answers() { # host port
    python3 -c 'import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 2).close()' "$1" "$2" 2>/dev/null
}

_dl_datastores() {
    local root="${DIRECTOR_LINK_DATASTORES:-${XDG_CACHE_HOME:-$HOME/.cache}/director-link/datastores}"
    mkdir -p "$root" || return 1
    _dl_install || return 1

    # PostgreSQL: the one this script started before, if it still answers; else a new throwaway cluster in a temp
    # folder its server user owns (root's home is closed to that user).
    local pg="$root/postgres" port password dir
    if [ -f "$pg/port" ] && [ -f "$pg/password" ] && _dl_answers 127.0.0.1 "$(cat "$pg/port")"; then
        echo "datastores: PostgreSQL reused on 127.0.0.1:$(cat "$pg/port")"
    else
        [ -f "$pg/dir" ] && _dl_stop_postgres "$(cat "$pg/dir")" && rm -rf "$(cat "$pg/dir")"
        rm -rf "$pg" && mkdir -p "$pg" || return 1
        dir="$(mktemp -d "${TMPDIR:-/tmp}/director-link-pg.XXXXXX")" || return 1
        port="$(_dl_free_port)" && password="$(python3 -c 'import secrets; print(secrets.token_hex(12))')" || return 1
        _dl_start_postgres "$dir" "$port" "$password" || return 1
        echo "$dir" >"$pg/dir"
        echo "$port" >"$pg/port"
        (umask 077 && echo "$password" >"$pg/password")
        echo "datastores: PostgreSQL $("$(_dl_pg_bin)/postgres" --version | awk '{print $3}') started on 127.0.0.1:$port"
    fi
    export DIRECTOR_LINK_TEST_POSTGRES="postgresql://postgres:$(cat "$pg/password")@127.0.0.1:$(cat "$pg/port")/postgres"

    # Redis: the same.
    local rd="$root/redis"
    if [ -f "$rd/port" ] && _dl_answers 127.0.0.1 "$(cat "$rd/port")"; then
        echo "datastores: Redis reused on 127.0.0.1:$(cat "$rd/port")"
    else
        mkdir -p "$rd" && port="$(_dl_free_port)" || return 1
        redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
            --dir "$rd" --pidfile "$rd/redis.pid" --logfile "$rd/redis.log" >/dev/null || return 1
        local i
        for i in $(seq 1 100); do _dl_answers 127.0.0.1 "$port" && break; sleep 0.1; done
        _dl_answers 127.0.0.1 "$port" || { echo "datastores: Redis did not start" >&2; return 1; }
        echo "$port" >"$rd/port"
        echo "datastores: $(redis-server --version | awk '{print $1, $3}') started on 127.0.0.1:$port"
    fi
    export DIRECTOR_LINK_TEST_REDIS="redis://127.0.0.1:$(cat "$rd/port")"
}

_dl_datastores_stop() {
    local root="${DIRECTOR_LINK_DATASTORES:-${XDG_CACHE_HOME:-$HOME/.cache}/director-link/datastores}"
    [ -f "$root/postgres/dir" ] && _dl_stop_postgres "$(cat "$root/postgres/dir")" && rm -rf "$(cat "$root/postgres/dir")"
    if [ -f "$root/redis/redis.pid" ]; then
        kill "$(cat "$root/redis/redis.pid")" 2>/dev/null
        rm -f "$root/redis/redis.pid" "$root/redis/port"
    fi
    rm -rf "$root/postgres"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -u
    case "${1:-}" in
        stop) _dl_datastores_stop ;;
        start-postgres) _dl_start_postgres "$2" "$3" "$4" ;;
        stop-postgres) _dl_stop_postgres "$2" ;;
        *)
            _dl_datastores || exit 1
            echo "export DIRECTOR_LINK_TEST_POSTGRES='$DIRECTOR_LINK_TEST_POSTGRES'"
            echo "export DIRECTOR_LINK_TEST_REDIS='$DIRECTOR_LINK_TEST_REDIS'"
            ;;
    esac
else
    # Not fatal here: the tests that need them fail, each with the reason; the rest still runs.
    _dl_datastores || echo "datastores: could not provide PostgreSQL and Redis; the tests that need them will fail" >&2
fi
