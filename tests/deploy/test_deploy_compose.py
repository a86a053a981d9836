"""compose/docker-compose.production.yml: valid Compose, healthy defaults, no secrets, documented.

No Docker engine runs here, so the file is checked statically: against the Compose Specification
schema, and for the properties the deployment relies on.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from deploy_support import COMPOSE_FILE, COMPOSE_SCHEMA, ENV_EXAMPLE, HAPROXY_CFG, ROOT

PYTHON_IMAGE = "enterprise-chat:"
# The only services reachable from outside, and the container ports each may publish.
PUBLISHERS = {
    "haproxy": {"80", "443", "8001", "8404"},
    "grafana": {"3000"},
    "rabbitmq": {"15672"},
    "minio": {"9001"},
    "prometheus": {"9090"},
}
ADMIN_UIS = {"rabbitmq", "minio", "prometheus"}
SECRET_NAME = re.compile(r"PASSWORD|_PASS$|SECRET|_TOKEN$|PRIVATE")
VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


@pytest.fixture(scope="module")
def text() -> str:
    return COMPOSE_FILE.read_text()


@pytest.fixture(scope="module")
def compose(text: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(text)
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


def one_shot_jobs(services: dict[str, dict[str, Any]]) -> set[str]:
    """Services others wait for with ``service_completed_successfully`` (init jobs)."""
    return {
        name
        for service in services.values()
        for name, condition in (service.get("depends_on") or {}).items()
        if isinstance(condition, dict) and condition.get("condition") == "service_completed_successfully"
    } | {"ollama-pull"}


def python_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if str(s.get("image", "")).startswith(PYTHON_IMAGE)}


def env_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"not KEY=VALUE: {line!r}"
            assert key not in pairs, f"{key} listed twice"
            pairs[key] = value
    return pairs


def test_validates_against_the_compose_specification(compose: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    if not COMPOSE_SCHEMA.exists():
        pytest.skip(f"Compose Specification schema not found at {COMPOSE_SCHEMA}")
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    errors = sorted(
        jsonschema.Draft7Validator(schema).iter_errors(compose), key=lambda e: list(e.absolute_path)
    )
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_the_seed_topology_is_there(services: dict[str, dict[str, Any]]) -> None:
    expected = {
        "haproxy",
        "gateway",
        "auth",
        "inference-worker",
        "archiver",
        "rabbitmq",
        "minio",
        "ollama-1",
        "ollama-2",
        "prometheus",
        "grafana",
        *(f"redis-{n}" for n in range(1, 7)),
        "redis-cluster-init",
        "minio-init",
        "ollama-pull",
        "rabbitmq-definitions",
    }
    assert expected <= set(services)
    # Gateways are replicas of one service: each must name itself (INSTANCE_ID defaults to its host
    # name), so no fixed INSTANCE_ID may be shared between them.
    assert "INSTANCE_ID" not in services["gateway"]["environment"]
    assert services["gateway"]["deploy"]["replicas"] == "${GATEWAY_REPLICAS:-3}"
    assert "--cluster-replicas 1" in services["redis-cluster-init"]["command"][-1]
    assert services["archiver"]["command"] == ["python", "-m", "archiver"]
    assert services["archiver"]["environment"]["S3_ENDPOINT_URL"] == "http://minio:9000"
    assert "replicas" in services["inference-worker"]["deploy"]


def test_python_services_share_one_image_and_probe_ready(services: dict[str, dict[str, Any]]) -> None:
    python = python_services(services)
    jobs = one_shot_jobs(services)
    assert {"gateway", "auth", "inference-worker", "archiver", "rabbitmq-definitions"} <= set(python)
    for name, service in python.items():
        assert service["build"]["dockerfile"] == "Dockerfile", name
        assert (COMPOSE_FILE.parent / service["build"]["context"] / "Dockerfile").exists()
        assert service["command"][0] == "python", name
        assert service["environment"]["ENVIRONMENT"] == "production", name
        if name in jobs:
            assert service["restart"] == "no", name
            continue
        probe = service["healthcheck"]["test"]
        code = probe[probe.index("-c") + 1]
        compile(code, f"{name} healthcheck", "exec")  # valid Python
        assert "/ready" in code, name


def test_every_long_running_service_has_a_healthcheck_restart_policy_and_limits(
    services: dict[str, dict[str, Any]],
) -> None:
    jobs = one_shot_jobs(services)
    for name, service in services.items():
        if name in jobs:
            assert service.get("restart") == "no", f"{name}: a one-shot job must not restart"
            continue
        assert service.get("restart") in {"always", "unless-stopped", "on-failure"}, name
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        limits = service.get("deploy", {}).get("resources", {}).get("limits", {})
        assert limits.get("memory") and limits.get("cpus"), f"{name} has no resource limits"


def test_only_the_edge_and_admin_uis_publish_ports(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        published = service.get("ports", [])
        if name not in PUBLISHERS:
            assert not published, f"back-end service {name} publishes {published}"
            assert service.get("networks") and "public" not in service["networks"], name
            continue
        container_ports = {str(p).rsplit(":", 1)[-1] for p in published}
        assert container_ports <= PUBLISHERS[name], f"{name} publishes {container_ports}"
        if name in ADMIN_UIS:
            assert all(str(p).startswith("${ADMIN_BIND_ADDRESS") for p in published), name


def test_backend_network_is_internal(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    assert compose["networks"]["backend"]["internal"] is True
    for name in ("gateway", "auth", "inference-worker", "archiver", "redis-1"):
        assert services[name]["networks"] == ["backend"], name


def test_no_literal_secrets(text: str, services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            value = str(value)
            if SECRET_NAME.search(key):
                assert value.startswith("${") and value.endswith("}"), f"{name}.{key} = {value!r}"
            if re.search(r"://[^/@\s]*:[^/@\s]+@", value):  # credentials in a URL
                assert "${" in value.split("@")[0], f"{name}.{key} embeds credentials"
    # A secret variable never has a default value (empty means "feature off").
    for variable, operator, default in VARIABLE.findall(text):
        if SECRET_NAME.search(variable) and operator.endswith("-"):
            assert default == "", f"${{{variable}}} has a default"
    for known_default in ("minioadmin", "guest:guest", "admin123", "changeme", "change-me"):
        assert known_default not in text.lower()


def test_env_example_lists_every_variable_the_compose_file_uses(text: str) -> None:
    example = env_example()
    used = {match[0] for match in VARIABLE.findall(text)}
    assert used, "no ${...} found"
    missing = sorted(used - set(example))
    assert not missing, f"not in compose/env.enterprise.example: {missing}"


def test_env_example_holds_placeholders_for_every_secret() -> None:
    for key, value in env_example().items():
        if SECRET_NAME.search(key):
            assert value == "change-me", f"{key} must be a change-me placeholder, not {value!r}"


def test_required_secrets_fail_loudly_when_unset(text: str) -> None:
    required = {variable for variable, operator, _ in VARIABLE.findall(text) if operator == ":?"}
    assert {
        "RABBITMQ_PASSWORD",
        "REDIS_PASSWORD",
        "MINIO_ROOT_PASSWORD",
        "S3_SECRET_ACCESS_KEY",
        "GRAFANA_ADMIN_PASSWORD",
        "HAPROXY_STATS_PASSWORD",
    } <= required


def test_haproxy_service_sets_only_variables_the_config_reads(services: dict[str, dict[str, Any]]) -> None:
    config = HAPROXY_CFG.read_text()
    haproxy = services["haproxy"]
    for key in haproxy["environment"]:
        assert f"${{{key}}}" in config or f"defined({key})" in config, f"haproxy.cfg ignores {key}"
    mounts = {volume.split(":")[1] for volume in haproxy["volumes"]}
    assert {"/usr/local/etc/haproxy/haproxy.cfg", "/usr/local/etc/haproxy/ssl"} <= mounts
    for volume in haproxy["volumes"]:
        assert (COMPOSE_FILE.parent / volume.split(":")[0]).exists(), volume


def test_gateways_verify_with_the_auth_public_key(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    secrets = compose["secrets"]
    assert services["auth"]["environment"]["AUTH_SIGNING_KEY_FILE"] == "/run/secrets/auth_signing_key"
    assert "auth_signing_key" in services["auth"]["secrets"]
    gateway = services["gateway"]
    assert gateway["environment"]["JWT_PUBLIC_KEY_FILE"] == "/run/secrets/jwt_public_key"
    assert gateway["secrets"] == ["jwt_public_key"]
    assert secrets["jwt_public_key"]["file"] == "./secrets/auth_signing_key.pub.pem"
    # Issuer and audience come from the same variables on both sides.
    assert services["auth"]["environment"]["AUTH_ISSUER"] == services["gateway"]["environment"]["JWT_ISSUER"]


def test_dockerfile_builds_one_non_root_image() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.MULTILINE)
    assert "uv sync --locked" in dockerfile  # the lock (test_deploy_lock.py)
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert users and not users[-1].startswith(("root", "0")), users
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "compose/env.enterprise", "compose/secrets", "haproxy/ssl"} <= ignored


def test_every_image_is_pinned(services: dict[str, dict[str, Any]]) -> None:
    """No ``:latest`` and no bare name: a redeploy runs what was tested."""
    for name, service in services.items():
        image = str(service["image"])
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest" and not tag.endswith(":-latest}"), f"{name}: {image}"
        assert re.search(r"\d+\.\d+|RELEASE\.\d{4}-\d\d-\d\dT", tag), f"{name}: {image} is no version"
    assert "latest" not in COMPOSE_FILE.read_text()


def test_the_application_image_is_tagged_with_the_project_version(
    services: dict[str, dict[str, Any]],
) -> None:
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert version
    for service in python_services(services).values():
        assert service["image"] == f"enterprise-chat:${{APP_IMAGE_TAG:-{version.group(1)}}}"
    assert env_example()["APP_IMAGE_TAG"] == version.group(1)


def test_haproxy_finds_every_gateway_replica_through_docker_dns(services: dict[str, dict[str, Any]]) -> None:
    environment = services["haproxy"]["environment"]
    assert environment["GATEWAY_SERVICE"] == "gateway:8101"
    assert environment["DNS_RESOLVER"] == "127.0.0.11:53"
    assert environment["GATEWAY_SLOTS"] == "${HAPROXY_GATEWAY_SLOTS:-32}"
    assert not {"GATEWAY1", "GATEWAY2", "GATEWAY3"} & set(environment)
    assert 'server-template gateway "1-${GATEWAY_SLOTS}" "${GATEWAY_SERVICE}"' in HAPROXY_CFG.read_text()
    prometheus = yaml.safe_load((ROOT / "monitoring" / "prometheus.compose.yml").read_text())
    job = next(job for job in prometheus["scrape_configs"] if job["job_name"] == "gateway")
    assert job["dns_sd_configs"] == [
        {"names": ["gateway"], "type": "A", "port": 8101, "refresh_interval": "15s"}
    ]
