"""Import the broker topology into RabbitMQ through the management API (the compose init job).

The definitions are built from the same settings the services read (``BROKER_PREFIX``,
``REQUEST_QUEUE_MAX_LENGTH``, ``REQUEST_DELIVERY_LIMIT``) with :meth:`broker.topology.Topology.
definitions` - the code behind ``broker/definitions.json`` - so the queues exist, and show in the
management UI, with exactly the arguments the gateways and workers declare (a different
``x-max-length`` would make their declarations fail with PRECONDITION_FAILED). Importing is
additive and idempotent: running it again changes nothing.

Why not ``load_definitions`` at boot: a definitions file loaded at boot replaces the broker's
default user and vhost, so it would have to carry the users and password hashes too; the broker's
own user comes from ``RABBITMQ_DEFAULT_USER``/``RABBITMQ_DEFAULT_PASS`` (generated secrets) instead.

The document also makes the queue-level integrator's user (``RABBITMQ_INTEGRATOR_USER``, default
``integrator``) with only the permissions an integrator needs (:meth:`broker.topology.Topology.
integrator_permissions`) and the password ``RABBITMQ_INTEGRATOR_PASSWORD`` (a generated secret, like
the services' own; without it the user is made unable to log in). Importing sets that password
again each time, so the secret stays the one source of it.

Environment: ``RABBITMQ_MANAGEMENT_URL`` (``http://rabbitmq:15672``), ``RABBITMQ_USER``,
``RABBITMQ_PASSWORD``, ``RABBITMQ_VHOST`` (``/``), ``RABBITMQ_INTEGRATOR_USER``,
``RABBITMQ_INTEGRATOR_PASSWORD``, ``IMPORT_ATTEMPTS`` (60, one per 2 s).
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from broker.topology import INTEGRATOR_USER, QueueLimits, Topology
from common.settings import CommonSettings, Env

__all__ = ["build_definitions", "import_definitions", "main"]


def build_definitions(environ: Mapping[str, str]) -> dict[str, Any]:
    """The topology document for the settings in ``environ``."""
    env = Env(environ)
    common = CommonSettings.from_env("rabbitmq-definitions", env)
    topology = Topology(
        common.broker_prefix,
        QueueLimits(max_length=common.queue_max_length, delivery_limit=common.queue_delivery_limit),
    )
    integrator = env.str("RABBITMQ_INTEGRATOR_USER", INTEGRATOR_USER)
    document = topology.definitions(vhost=env.str("RABBITMQ_VHOST", "/"), integrators=(integrator,))
    password = env.optional("RABBITMQ_INTEGRATOR_PASSWORD")
    if password:
        secret = env.secret("RABBITMQ_INTEGRATOR_PASSWORD", environment=common.environment)
        for user in document["users"]:
            user["password"] = secret
    return document


def import_definitions(
    url: str, user: str, password: str, document: dict[str, Any], *, attempts: int, delay: float
) -> None:
    """POST ``document`` to ``<url>/api/definitions``, retrying while the broker starts."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(
        f"{url.rstrip('/')}/api/definitions",
        data=json.dumps(document).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"},
    )
    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                if response.status in {200, 201, 204}:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code in {400, 401, 403}:  # retrying cannot fix bad credentials or a bad document
                raise SystemExit(f"definitions import refused: {exc.code} {exc.read()[:500]!r}") from None
            print(f"attempt {attempt}: HTTP {exc.code}", file=sys.stderr)
        except (urllib.error.URLError, OSError) as exc:
            print(f"attempt {attempt}: {exc}", file=sys.stderr)
        time.sleep(delay)
    raise SystemExit(f"RabbitMQ management API at {url} did not accept the definitions")


def main() -> int:
    env = Env()
    document = build_definitions(os.environ)
    import_definitions(
        env.str("RABBITMQ_MANAGEMENT_URL", "http://rabbitmq:15672"),
        env.str("RABBITMQ_USER"),
        env.str("RABBITMQ_PASSWORD"),
        document,
        attempts=env.int("IMPORT_ATTEMPTS", 60, minimum=1),
        delay=env.float("IMPORT_RETRY_SECONDS", 2.0, minimum=0.0),
    )
    names = [q["name"] for q in document["queues"]]
    users = [u["name"] for u in document["users"]]
    print(f"imported RabbitMQ definitions: queues {', '.join(names)}; users {', '.join(users)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
