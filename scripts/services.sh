#!/usr/bin/env bash
# services.sh: make sure PostgreSQL (127.0.0.1:5432, trust auth, database `test`) and NATS with
# JetStream (127.0.0.1:4222) are up; install what is missing (apt-get) and start what is down.
# Idempotent: a service that already answers is left alone. Never stops anything.
set -euo pipefail

log() { echo "services: $*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

APT_UPDATED=0
apt_install() {
  if [ "$APT_UPDATED" = 0 ]; then
    as_root apt-get update -qq >&2
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >&2
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 50); do
    if port_open "$1" "$2"; then return 0; fi
    sleep 0.2
  done
  return 1
}

# ---------- PostgreSQL ----------
pg_up() { command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; }

if ! pg_up; then
  if ! command -v pg_ctlcluster >/dev/null; then
    log "installing PostgreSQL"
    apt_install postgresql postgresql-client
  fi
  version="$(ls /etc/postgresql | sort -V | tail -n1)"
  log "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 50); do pg_up && break; sleep 0.2; done
  pg_up || { log "PostgreSQL did not come up on 127.0.0.1:5432"; exit 1; }
fi

psql_tcp() { psql -h 127.0.0.1 -p 5432 -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
if ! psql_tcp -d postgres -c 'select 1' >/dev/null 2>&1; then
  # A fresh install asks for passwords on TCP; tests expect trust on loopback.
  version="$(ls /etc/postgresql | sort -V | tail -n1)"
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  log "enabling trust auth for loopback in $hba"
  as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  sleep 0.5
fi
if [ "$(psql_tcp -d postgres -c "select 1 from pg_database where datname = 'test'")" != 1 ]; then
  log "creating database test"
  psql_tcp -d postgres -c 'create database test'
fi
log "PostgreSQL ready at 127.0.0.1:5432 (database test)"

# ---------- NATS with JetStream ----------
nats_jetstream() {
  # The server's INFO line says whether JetStream is on.
  local info
  info="$( (exec 3<>/dev/tcp/127.0.0.1/4222 && timeout 2 head -n1 <&3) 2>/dev/null || true)"
  [[ "$info" == *'"jetstream":true'* ]]
}

if ! port_open 127.0.0.1 4222; then
  if ! command -v nats-server >/dev/null && [ ! -x /usr/sbin/nats-server ]; then
    log "installing nats-server"
    apt_install nats-server
  fi
  bin="$(command -v nats-server || echo /usr/sbin/nats-server)"
  as_root mkdir -p /var/lib/nats-server /var/log
  log "starting nats-server with JetStream"
  as_root start-stop-daemon --start --oknodo --background --exec "$bin" -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  wait_port 127.0.0.1 4222 || { log "nats-server did not come up on 127.0.0.1:4222"; exit 1; }
fi
if ! nats_jetstream; then
  log "a server answers on 127.0.0.1:4222 but without JetStream; JetStream tests will fail"
  exit 1
fi
log "NATS with JetStream ready at 127.0.0.1:4222"
