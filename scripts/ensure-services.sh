#!/usr/bin/env bash
# Make sure the services the tests and the local run need are up: RabbitMQ, Redis and PostgreSQL.
# Uses RABBITMQ_URL / REDIS_URL / POSTGRES_URL (or DATABASE_URL) when set (then nothing is
# started); otherwise checks the local ports and starts the Debian services, installing them first
# when missing and running as root. PostgreSQL is reached as user postgres over TCP without a
# password (trust for 127.0.0.1, as on our machines); elsewhere set POSTGRES_URL / DATABASE_URL.
#
# With arguments, only the named tools instead:
#   haproxy   install the haproxy binary when missing (as root; otherwise only a hint). Nothing is
#             started: the tests run `haproxy -f haproxy/haproxy.cfg` themselves.
#   prometheus  install prometheus and promtool when missing (as root; otherwise only a hint).
#             Nothing is started: the monitoring tests run their own prometheus.
#   chromium  install Debian's chromium and chromium-driver when missing (as root; otherwise only a
#             hint): the browser tests (tests/web) drive it headless through Playwright.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

need_install() {
  local pkgs=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || pkgs+=("$pkg"); done
  if ((${#pkgs[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
      echo "missing Debian packages: ${pkgs[*]} (run: sudo apt-get install ${pkgs[*]})" >&2
      exit 1
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
  fi
}

ensure_haproxy() {
  if command -v haproxy >/dev/null 2>&1 || [[ -x /usr/sbin/haproxy ]]; then
    return 0
  fi
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "haproxy is not installed; its tests will be skipped (install: sudo apt-get install haproxy)" >&2
    return 0
  fi
  echo "installing haproxy (for the tests; the Debian service is not used)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null
}

# --no-install-recommends: the package otherwise pulls in node-exporter and its collectors. The
# Debian service it installs is not used (the tests start prometheus on free ports): where systemd
# started it, it is stopped and disabled again, so port 9090 stays free.
ensure_prometheus() {
  if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    return 0
  fi
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "prometheus is not installed; its tests will be skipped (install: sudo apt-get install prometheus)" >&2
    return 0
  fi
  echo "installing prometheus and promtool (for the tests; the Debian service is not used)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  if [[ -d /run/systemd/system ]]; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
}

ensure_chromium() {
  if [[ -x /usr/bin/chromium ]] && command -v chromedriver >/dev/null 2>&1; then
    return 0
  fi
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "chromium is not installed; the browser tests will be skipped (install: sudo apt-get install chromium chromium-driver)" >&2
    return 0
  fi
  echo "installing chromium and chromium-driver (for the browser tests)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
}

if (($#)); then
  for tool in "$@"; do
    case "$tool" in
      haproxy) ensure_haproxy ;;
      prometheus) ensure_prometheus ;;
      # The fault suite starts its own node and server from these binaries (never the services).
      rabbitmq-server) command -v rabbitmq-server >/dev/null 2>&1 || [[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]] || need_install rabbitmq-server ;;
      redis-server) command -v redis-server >/dev/null 2>&1 || need_install redis-server ;;
      chromium) ensure_chromium ;;
      shellcheck) command -v shellcheck >/dev/null 2>&1 || { [[ $(id -u) -eq 0 ]] && need_install shellcheck; } || true ;;
      *) echo "unknown argument: $tool (known: haproxy, prometheus, rabbitmq-server, redis-server, shellcheck, chromium)" >&2; exit 2 ;;
    esac
  done
  exit 0
fi

if [[ -z "${REDIS_URL:-}" ]] && ! port_open 6379; then
  need_install redis-server
  echo "starting redis-server on 6379"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  for _ in $(seq 50); do port_open 6379 && break; sleep 0.1; done
fi

if [[ -z "${RABBITMQ_URL:-}" ]] && ! port_open 5672; then
  need_install rabbitmq-server
  echo "starting rabbitmq-server on 5672"
  rabbitmq-server -detached >/dev/null 2>&1 || true
  for _ in $(seq 120); do rabbitmq-diagnostics -q check_running >/dev/null 2>&1 && break; sleep 1; done
  for _ in $(seq 60); do port_open 5672 && break; sleep 0.5; done
fi

# The management UI (backlog inspection) and its HTTP API, which the gateways read the queue depth
# from; enabling is idempotent, takes a few seconds and works offline.
local_broker() { [[ -z "${RABBITMQ_URL:-}" || "$RABBITMQ_URL" == *@127.0.0.1* || "$RABBITMQ_URL" == *@localhost* ]]; }
if local_broker && ! port_open 15672 && command -v rabbitmq-plugins >/dev/null 2>&1 \
  && [[ $(id -u) -eq 0 ]]; then
  echo "enabling the RabbitMQ management plugin on 15672"
  rabbitmq-plugins enable --quiet rabbitmq_management >/dev/null 2>&1 || true
  for _ in $(seq 60); do port_open 15672 && break; sleep 0.5; done
fi

if [[ -z "${POSTGRES_URL:-}${DATABASE_URL:-}" ]] && ! port_open 5432; then
  need_install postgresql
  echo "starting postgresql on 5432"
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    version="$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -1)"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  else
    service postgresql start >/dev/null 2>&1 || true
  fi
  for _ in $(seq 60); do port_open 5432 && break; sleep 0.5; done
fi

port_open 6379 || [[ -n "${REDIS_URL:-}" ]] || { echo "Redis is not reachable on 6379" >&2; exit 1; }
port_open 5672 || [[ -n "${RABBITMQ_URL:-}" ]] || { echo "RabbitMQ is not reachable on 5672" >&2; exit 1; }
port_open 5432 || [[ -n "${POSTGRES_URL:-}${DATABASE_URL:-}" ]] || { echo "PostgreSQL is not reachable on 5432" >&2; exit 1; }
