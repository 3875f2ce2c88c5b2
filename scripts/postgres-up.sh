#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on loopback for the test suite and print its URL.
# Installs Debian's postgresql package when no server binaries are present (CI machines
# start without one). Usage: export MORPHTUNE_TEST_POSTGRES_URL="$(bash scripts/postgres-up.sh)"
set -euo pipefail

find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

BIN="$(find_bin || true)"
if [ -z "$BIN" ] || [ ! -x "$BIN/initdb" ]; then
  as_root=""
  [ "$(id -u)" = 0 ] || as_root="sudo"
  $as_root apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq postgresql >&2
  BIN="$(find_bin)"
fi

DATA="$(mktemp -d /tmp/morphtune-pg.XXXXXX)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
run() { "$@"; }
if [ "$(id -u)" = 0 ]; then
  # the server refuses to run as root: run it as the package's postgres user
  id postgres >/dev/null 2>&1 || useradd --system --home "$DATA" postgres
  chown postgres "$DATA"
  run() { runuser -u postgres -- "$@"; }
fi
run "$BIN/initdb" -D "$DATA/db" -A trust -U postgres >"$DATA/initdb.log" 2>&1
# the server outlives this script: start it with every descriptor but stdio closed, or it
# keeps whatever the caller had open (a lock held by `flock`, a pipe a CI runner waits on)
run python3 -c 'import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:], close_fds=True))' \
  "$BIN/pg_ctl" -D "$DATA/db" -l "$DATA/server.log" -w \
  -o "-p $PORT -k $DATA -c listen_addresses=127.0.0.1" start </dev/null >&2
run "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres morphtune_test
echo "postgresql://postgres@127.0.0.1:$PORT/morphtune_test"
