#!/usr/bin/env bash
# Day-2 operations on the compose deployment; the Makefile's down/ps/logs/scale/backup targets.
#
#   compose/manage.sh down                      stop and remove the containers (volumes are kept)
#   compose/manage.sh ps                        list the services and their health
#   compose/manage.sh logs [service]            follow the logs (all services, or one)
#   compose/manage.sh scale [workers] [gateways]
#                                               run that many inference workers and gateways
#                                               (gateways: 1..HAPROXY_GATEWAY_SLOTS, default 32;
#                                               HAProxy finds the replicas through Docker's DNS)
#   compose/manage.sh backup [dir]              PostgreSQL (pg_dump), Redis RDB snapshots of every
#                                               node, the MinIO archive bucket (mc mirror) and the
#                                               RabbitMQ definitions, into dir (default
#                                               backups/<UTC time>/, mode 700; README: restoring)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMPOSE_FILE="$ROOT/compose/docker-compose.production.yml"
ENV_FILE="$ROOT/compose/env.enterprise"

die() { printf 'error: %s\n' "$*" >&2; exit 1; }

compose() {
  [[ -f "$ENV_FILE" ]] || die "$ENV_FILE is missing: deploy first (make deploy)"
  if docker compose version >/dev/null 2>&1; then
    docker compose -f "$COMPOSE_FILE" --env-file "$ENV_FILE" "$@"
  elif command -v docker-compose >/dev/null 2>&1; then
    docker-compose -f "$COMPOSE_FILE" --env-file "$ENV_FILE" "$@"
  else
    die "Docker Compose is required (the docker compose plugin or docker-compose)"
  fi
}

is_count() { [[ "$1" =~ ^[0-9]+$ ]]; }

# HAPROXY_GATEWAY_SLOTS from compose/env.enterprise, else the compose file's default (32).
gateway_slots() {
  local value
  value="$(sed -n 's/^HAPROXY_GATEWAY_SLOTS=\([0-9][0-9]*\)$/\1/p' "$ENV_FILE" | tail -n 1)"
  printf '%s\n' "${value:-32}"
}

scale() {
  local workers="${1:-}" gateways="${2:-}" slots
  [[ -n "$workers$gateways" ]] || die "usage: make scale WORKERS=n GATEWAYS=n (either or both)"
  if [[ -n "$workers" ]]; then
    is_count "$workers" || die "WORKERS must be a number, got '$workers'"
    compose up -d --no-deps --no-recreate --scale "inference-worker=$workers" inference-worker
  fi
  if [[ -n "$gateways" ]]; then
    is_count "$gateways" || die "GATEWAYS must be a number, got '$gateways'"
    slots="$(gateway_slots)"
    ((gateways >= 1 && gateways <= slots)) ||
      die "GATEWAYS must be 1-$slots: HAProxy has $slots gateway slots (raise HAPROXY_GATEWAY_SLOTS in compose/env.enterprise, then: docker compose up -d haproxy)"
    # HAProxy re-resolves the `gateway` name every few seconds: no reload needed.
    compose up -d --no-deps --no-recreate --scale "gateway=$gateways" gateway
  fi
  compose ps
}

backup() {
  local dir="${1:-$ROOT/backups/$(date -u +%Y%m%dT%H%M%SZ)}" n before
  umask 077
  mkdir -p "$dir/minio"
  # Backups hold chats and password hashes: never let them into git.
  [[ -f "$ROOT/backups/.gitignore" ]] || { mkdir -p "$ROOT/backups" && printf '*\n' >"$ROOT/backups/.gitignore"; }
  echo "==> backing up into $dir"
  # Users, organizations, API keys, usage and audit: a consistent snapshot, custom format
  # (pg_restore), expanded by the container's shell from its own environment.
  # shellcheck disable=SC2016
  compose exec -T postgres sh -c 'pg_dump -U "$POSTGRES_USER" -Fc "$POSTGRES_DB"' >"$dir/postgres.dump"
  for n in 1 2 3 4 5 6; do
    before="$(compose exec -T "redis-$n" redis-cli LASTSAVE | tr -d '\r')"
    compose exec -T "redis-$n" redis-cli BGSAVE SCHEDULE >/dev/null
    for _ in $(seq 120); do
      [[ "$(compose exec -T "redis-$n" redis-cli LASTSAVE | tr -d '\r')" != "$before" ]] && break
      sleep 1
    done
    compose cp "redis-$n:/data/dump.rdb" "$dir/redis-$n.rdb"
  done
  # shellcheck disable=SC2016  # expanded by the container's shell, from its own environment
  compose run --rm --no-deps -v "$dir/minio:/backup" minio-init \
    'mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null &&
     mc mirror --overwrite "local/$S3_BUCKET" "/backup/$S3_BUCKET"'
  compose exec -T rabbitmq rabbitmqctl export_definitions - >"$dir/rabbitmq-definitions.json"
  echo "==> backup complete: $dir"
}

case "${1:-}" in
  down) compose down ;;
  ps) compose ps ;;
  logs) shift; compose logs -f --tail=200 "$@" ;;
  scale) scale "${2:-}" "${3:-}" ;;
  backup) backup "${2:-}" ;;
  *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
