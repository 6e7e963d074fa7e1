#!/bin/sh
# The example cluster on one machine (README.md beside this file): Redis,
# PostgreSQL and three mailgate nodes, all on 127.0.0.1.
#
#   ./cluster.sh engines   start Redis (port 16379) and PostgreSQL (15432)
#   ./cluster.sh nodes     start the nodes mx1, mx2, mx3 (SMTP 2601-2603,
#                          consoles 8701-8703)
#   ./cluster.sh stop      stop the nodes, then the engines
#
# Everything lives under $RUN: data, logs, pid files. The environment
# overrides the defaults (a test runs it on free ports):
#   RUN=/tmp/mailgate-cluster REDIS_PORT=16379 PG_PORT=15432
#   CONFIGS=<this directory>  MAILGATE=mailgate
# Needs redis-server and PostgreSQL (Debian: apt-get install redis-server
# postgresql). As root, PostgreSQL runs as the user postgres, as it must.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
RUN=${RUN:-/tmp/mailgate-cluster}
REDIS_PORT=${REDIS_PORT:-16379}
PG_PORT=${PG_PORT:-15432}
CONFIGS=${CONFIGS:-$here}
MAILGATE=${MAILGATE:-mailgate}
NODES="mx1 mx2 mx3"

# pgbin is the directory of PostgreSQL's programs: pg_ctl's on PATH (a
# link followed), or where Debian keeps them, the newest version.
pgbin() {
	if command -v pg_ctl >/dev/null 2>&1; then
		dirname "$(readlink -f "$(command -v pg_ctl)")"
		return
	fi
	ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

# as_pg runs a PostgreSQL server program: it refuses to run as root.
as_pg() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

# running reports whether the process in pid file $1 runs.
running() { [ -f "$1" ] && kill -0 "$(head -n 1 "$1")" 2>/dev/null; }

engines() {
	mkdir -p "$RUN"
	if ! running "$RUN/redis.pid"; then
		redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$RUN" --daemonize yes \
			--pidfile "$RUN/redis.pid" --logfile "$RUN/redis.log" --save "" --appendonly no
	fi
	bin=$(pgbin)
	if [ -z "$bin" ]; then
		echo "cluster.sh: PostgreSQL not found; apt-get install postgresql" >&2
		exit 1
	fi
	if [ ! -f "$RUN/pg/PG_VERSION" ]; then
		mkdir -p "$RUN/pg"
		chmod 700 "$RUN/pg"
		if [ "$(id -u)" = 0 ]; then
			chown postgres "$RUN/pg"
		fi
		as_pg "$bin/initdb" -D "$RUN/pg" -U mailgate --auth=trust -E UTF8 --locale=C >"$RUN/initdb.log"
	fi
	if ! running "$RUN/pg/postmaster.pid"; then
		as_pg "$bin/pg_ctl" -D "$RUN/pg" -l "$RUN/pg/postgres.log" -w -t 60 \
			-o "-h 127.0.0.1 -p $PG_PORT -k $RUN/pg" start >/dev/null
	fi
	# The database the nodes share; there already after a restart.
	"$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U mailgate -d postgres -qtAc \
		"SELECT 1 FROM pg_database WHERE datname = 'mailgate'" | grep -q 1 ||
		"$bin/createdb" -h 127.0.0.1 -p "$PG_PORT" -U mailgate mailgate
	echo "Redis on 127.0.0.1:$REDIS_PORT, PostgreSQL on 127.0.0.1:$PG_PORT; data and logs in $RUN"
}

nodes() {
	mkdir -p "$RUN"
	# The key the consoles sign sessions and links with: one for all
	# the nodes, so that a digest's link works on any of them.
	if [ ! -f "$RUN/web-secret" ]; then
		(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$RUN/web-secret")
	fi
	for n in $NODES; do
		"$MAILGATE" serve -config "$CONFIGS/$n.toml" >"$RUN/$n.log" 2>&1 &
		echo $! >"$RUN/$n.pid"
	done
	echo "nodes $NODES started; logs in $RUN/<node>.log; mailgate cluster status -config $CONFIGS/mx1.toml"
}

# stopPid stops the process in pid file $1 and waits (10s at most) for it.
stopPid() {
	[ -f "$1" ] || return 0
	pid=$(cat "$1")
	kill "$pid" 2>/dev/null || true
	i=0
	while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	rm -f "$1"
}

stop() {
	for n in $NODES; do
		stopPid "$RUN/$n.pid"
	done
	stopPid "$RUN/redis.pid"
	if [ -f "$RUN/pg/postmaster.pid" ]; then
		as_pg "$(pgbin)/pg_ctl" -D "$RUN/pg" -m fast -w stop >/dev/null
	fi
}

case "${1:-}" in
engines) engines ;;
nodes) nodes ;;
stop) stop ;;
*)
	echo "usage: $0 engines|nodes|stop" >&2
	exit 2
	;;
esac
