"""The Kubernetes manifests under deploy/k8s are configuration: test them like code.

Every document is validated against the Kubernetes API schemas bundled with `kubernetes-validate`
(offline; strict, so an unknown or misspelt field is an error). Then the structure that matters is
checked against the code: every service in `shared.cli.SERVICES` has a Deployment, Service,
PodDisruptionBudget and HorizontalPodAutoscaler; its command, port and probes are the service's;
every setting it needs is provided, only real settings are set and secrets come only from the
Secret; one image everywhere; the pods run as the image's user; the migration Job runs `migrate`.

The structural checks return the problems they find, so the last tests can feed them broken copies
of the manifests and expect each breakage to be caught.
"""

from __future__ import annotations

import copy
import importlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from shared.cli import SERVICES
from shared.observability import CONSUMER_LAG
from shared.settings import PlatformSettings, ServiceSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S = REPO_ROOT / "deploy" / "k8s"
IMAGE_COMPONENT = K8S / "image"
SECRET_EXAMPLE = K8S / "secret.example.yaml"
ADAPTER_VALUES = K8S / "prometheus-adapter-values.yaml"
# YAML under deploy/k8s that no kustomization applies, on purpose.
NOT_APPLIED = {SECRET_EXAMPLE, ADAPTER_VALUES}

# The oldest cluster version the manifests promise to run on, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.30", "1.37")
NAMESPACE = "attendance"
SECRET_NAME = "attendance-secrets"
# Settings that only ever come from the Secret.
SECRET_SETTINGS = {"DATABASE_URL", "JWT_SECRET", "SECRETS_KEY", "SMTP_USERNAME", "SMTP_PASSWORD"}
# Settings whose default is a development value (or empty) but that carry no localhost address.
DEV_DEFAULT_SETTINGS = {"JWT_SECRET", "SECRETS_KEY", "PUBLIC_URL"}
# They consume every mark (attendance.marks.v1): they scale on consumer lag as well as CPU.
CONSUMER_HEAVY = {"thresholds", "cme"}
RSS_TARGET_BYTES = 300 * 10**6  # no service above 300 MB RSS
LAG_METRIC = CONSUMER_LAG.describe()[0].name

Docs = list[dict[str, Any]]


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------


def kustomization(directory: Path) -> dict[str, Any]:
    return yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))


def resource_files(directory: Path) -> list[Path]:
    """The files a kustomization applies, following directories it names as resources."""
    files: list[Path] = []
    for entry in kustomization(directory).get("resources", []):
        path = (directory / entry).resolve()
        files += resource_files(path) if path.is_dir() else [path]
    return files


def load(paths: list[Path]) -> Docs:
    return [doc for path in paths for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


PLATFORM = load(resource_files(K8S))
MIGRATION = load(resource_files(K8S / "migrate"))
[SECRET] = load([SECRET_EXAMPLE])
ALL_DOCUMENTS = [*PLATFORM, *MIGRATION, SECRET]


def find(docs: Docs, kind: str, name: str) -> dict[str, Any] | None:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) <= 1, f"{len(matches)} {kind}s named {name}"
    return matches[0] if matches else None


def label(doc: dict[str, Any]) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


# --------------------------------------------------------------------------------------------
# what the code says
# --------------------------------------------------------------------------------------------


def settings_class(service: str) -> type[ServiceSettings]:
    module = importlib.import_module(f"services.{service}.settings")
    [cls] = [
        c
        for c in vars(module).values()
        if isinstance(c, type) and issubclass(c, ServiceSettings) and c.__module__ == module.__name__
    ]
    return cls


def env_names(cls: type[PlatformSettings]) -> dict[str, Any]:
    """Environment variable name -> field, as pydantic-settings reads them."""
    return {
        (field.validation_alias if isinstance(field.validation_alias, str) else name).upper(): field
        for name, field in cls.model_fields.items()
    }


def required_env(service: str) -> set[str]:
    """What production must set: every setting whose default points at this machine, plus the
    development defaults."""
    needed = set(DEV_DEFAULT_SETTINGS)
    for name, field in env_names(settings_class(service)).items():
        if isinstance(field.default, str) and ("127.0.0.1" in field.default or "localhost" in field.default):
            needed.add(name)
    return needed


def consumer_group(service: str) -> str | None:
    field = settings_class(service).model_fields.get("consumer_group")
    return field.default if field else None


def dockerfile_uid() -> int:
    match = re.search(r"useradd [^\n]*--uid (\d+)", (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8"))
    assert match, "no useradd --uid in the Dockerfile"
    return int(match.group(1))


def image_name() -> str:
    [image] = kustomization(IMAGE_COMPONENT)["images"]
    return image["name"]


# --------------------------------------------------------------------------------------------
# structural checks: each returns the problems it finds
# --------------------------------------------------------------------------------------------


def configmap_data(docs: Docs) -> dict[str, str]:
    data: dict[str, str] = {}
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            data.update(doc.get("data") or {})
    return data


def provided_env(docs: Docs, container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Variable name -> where its value comes from: {"configMap": key}, {"secret": key, "secret_name": name}
    or {"value": v}."""
    env: dict[str, dict[str, Any]] = {}
    for source in container.get("envFrom", []):
        config = find(docs, "ConfigMap", source["configMapRef"]["name"]) or {}
        env.update({key: {"configMap": key} for key in config.get("data") or {}})
    for item in container.get("env", []):
        ref = item.get("valueFrom", {})
        if "secretKeyRef" in ref:
            env[item["name"]] = {"secret": ref["secretKeyRef"]["key"], "secret_name": ref["secretKeyRef"]["name"]}
        elif "configMapKeyRef" in ref:
            env[item["name"]] = {"configMap": ref["configMapKeyRef"]["key"]}
        else:
            env[item["name"]] = {"value": item.get("value")}
    return env


def port_number(container: dict[str, Any], port: int | str) -> int | None:
    if isinstance(port, int):
        return port
    return next((p["containerPort"] for p in container.get("ports", []) if p.get("name") == port), None)


def pod_security_problems(what: str, pod: dict[str, Any]) -> list[str]:
    problems = []
    context = pod.get("securityContext", {})
    if context.get("runAsNonRoot") is not True:
        problems.append(f"{what}: runAsNonRoot is not true")
    if context.get("runAsUser") != dockerfile_uid():
        problems.append(f"{what}: runAsUser {context.get('runAsUser')} is not the image's uid {dockerfile_uid()}")
    for container in pod["containers"]:
        own = container.get("securityContext", {})
        if own.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{what}: container {container['name']} may escalate privileges")
        if own.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{what}: container {container['name']} has a writable root filesystem")
        if own.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{what}: container {container['name']} keeps Linux capabilities")
        if container.get("image") != image_name():
            problems.append(f"{what}: image {container.get('image')!r} is not the platform image {image_name()!r}")
        if "command" in container:
            problems.append(f"{what}: `command` replaces the image's `attendance` entrypoint; use `args`")
    return problems


def resource_problems(what: str, container: dict[str, Any]) -> list[str]:
    resources = container.get("resources", {})
    problems = [
        f"{what}: no {kind} {resource}"
        for kind in ("requests", "limits")
        for resource in ("cpu", "memory")
        if resource not in resources.get(kind, {})
    ]
    if problems:
        return problems
    memory = quantity(resources["limits"]["memory"])
    # Above the target (a pod at the target must not be killed) with headroom, and not so high that
    # a leak goes unnoticed until the node runs short.
    if not 1.2 * RSS_TARGET_BYTES <= memory <= 2 * RSS_TARGET_BYTES:
        problems.append(f"{what}: memory limit {resources['limits']['memory']} not within 1.2-2x the 300 MB target")
    if quantity(resources["requests"]["memory"]) > memory:
        problems.append(f"{what}: memory request above its limit")
    if quantity(resources["requests"]["cpu"]) > quantity(resources["limits"]["cpu"]):
        problems.append(f"{what}: cpu request above its limit")
    return problems


def quantity(value: str | int) -> float:
    """A Kubernetes quantity (the suffixes used here) as a number: bytes or cores."""
    text = str(value)
    for suffix, factor in (("Mi", 2**20), ("Gi", 2**30), ("M", 10**6), ("G", 10**9), ("m", 1e-3)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def env_problems(docs: Docs, service: str, container: dict[str, Any]) -> list[str]:
    what = f"Deployment/{service}"
    env = provided_env(docs, container)
    # `attendance serve` sets these from its --host and --port (shared/cli.py)
    set_by_serve = {"HOST", "PORT", f"{service.upper()}_PORT"} if container.get("args", [])[:1] == ["serve"] else set()
    missing = required_env(service) - set(env) - set_by_serve
    problems = [f"{what}: {name} is not provided" for name in sorted(missing)]
    accepted = env_names(settings_class(service))
    for item in container.get("env", []):
        if item["name"].upper() not in accepted:
            problems.append(f"{what}: {item['name']} is not a setting of {service}")
    for name, source in env.items():
        if name in SECRET_SETTINGS and (source.get("secret") != name or source.get("secret_name") != SECRET_NAME):
            problems.append(f"{what}: {name} must come from the Secret {SECRET_NAME} (key {name})")
    return problems


def probe_problems(service: str, container: dict[str, Any]) -> list[str]:
    port = SERVICES[service].port
    problems = []
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container.get(probe, {}).get("httpGet")
        if not get:
            problems.append(f"Deployment/{service}: no HTTP {probe}")
        elif get.get("path") != path or port_number(container, get.get("port")) != port:
            problems.append(
                f"Deployment/{service}: {probe} calls {get.get('path')} on {get.get('port')}, not {path} on {port}"
            )
    return problems


def service_problems(docs: Docs, service: str) -> list[str]:
    """Deployment, Service, PodDisruptionBudget and HorizontalPodAutoscaler of one service."""
    port = SERVICES[service].port
    deployment = find(docs, "Deployment", service)
    if deployment is None:
        return [f"no Deployment/{service}"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    problems = pod_security_problems(f"Deployment/{service}", pod)
    problems += resource_problems(f"Deployment/{service}", container)
    problems += env_problems(docs, service, container)
    problems += probe_problems(service, container)
    expected_args = ["serve", service, "--host", "0.0.0.0", "--port", str(port)]
    if container.get("args") != expected_args:
        problems.append(f"Deployment/{service}: args {container.get('args')} are not {expected_args}")
    if [p.get("containerPort") for p in container.get("ports", []) if p.get("name") == "http"] != [port]:
        problems.append(f"Deployment/{service}: no container port `http` {port}")
    if not deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items():
        problems.append(f"Deployment/{service}: selector does not select its own pods")

    svc = find(docs, "Service", service)
    if svc is None:
        problems.append(f"no Service/{service}")
    else:
        if not svc["spec"]["selector"].items() <= pod_labels.items():
            problems.append(f"Service/{service}: selector does not select the Deployment's pods")
        if [(p["port"], port_number(container, p["targetPort"])) for p in svc["spec"]["ports"]] != [(port, port)]:
            problems.append(f"Service/{service}: does not route port {port} to the pods' port {port}")

    budget = find(docs, "PodDisruptionBudget", service)
    if budget is None:
        problems.append(f"no PodDisruptionBudget/{service}")
    elif not budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items():
        problems.append(f"PodDisruptionBudget/{service}: selector does not select the Deployment's pods")

    problems += autoscaler_problems(docs, service)
    return problems


def autoscaler_problems(docs: Docs, service: str) -> list[str]:
    hpa = find(docs, "HorizontalPodAutoscaler", service)
    if hpa is None:
        return [f"no HorizontalPodAutoscaler/{service}"]
    what = f"HorizontalPodAutoscaler/{service}"
    spec = hpa["spec"]
    problems = []
    if spec["scaleTargetRef"] != {"apiVersion": "apps/v1", "kind": "Deployment", "name": service}:
        problems.append(f"{what}: scales {spec['scaleTargetRef']}, not Deployment/{service}")
    if spec.get("minReplicas", 1) < 2:
        problems.append(f"{what}: fewer than 2 replicas leaves no replica during a disruption")
    metrics = spec.get("metrics", [])
    if not any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in metrics):
        problems.append(f"{what}: does not scale on CPU")
    group = consumer_group(service)
    partitions = int(configmap_data(docs).get("KAFKA_TOPIC_PARTITIONS", "0"))
    if group and spec["maxReplicas"] > partitions:
        problems.append(f"{what}: maxReplicas {spec['maxReplicas']} above the {partitions} partitions: idle replicas")
    if service in CONSUMER_HEAVY:
        lag = [m["external"]["metric"] for m in metrics if m["type"] == "External"]
        if lag != [{"name": LAG_METRIC, "selector": {"matchLabels": {"consumer": group}}}]:
            problems.append(f"{what}: does not scale on {LAG_METRIC} of consumer group {group!r} (found {lag})")
    return problems


def platform_problems(docs: Docs) -> list[str]:
    """What concerns the platform as a whole: namespace, the ConfigMap, the Secret's keys."""
    problems = []
    if find(docs, "Namespace", NAMESPACE) is None:
        problems.append(f"no Namespace/{NAMESPACE}")
    for doc in docs:
        if doc["kind"] != "Namespace" and doc["metadata"].get("namespace") != NAMESPACE:
            problems.append(f"{label(doc)} is not in namespace {NAMESPACE}")
    settings = {name for service in SERVICES for name in env_names(settings_class(service))}
    public_urls = {f"{service.upper()}_PUBLIC_URL" for service in SERVICES}
    for key in configmap_data(docs):
        if key in SECRET_SETTINGS:
            problems.append(f"ConfigMap: {key} is a secret")
        elif key not in settings | public_urls:
            problems.append(f"ConfigMap: {key} is not a setting of any service")
    secret_keys = set(SECRET["stringData"])
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            for container in doc["spec"]["template"]["spec"]["containers"]:
                for source in provided_env(docs, container).values():
                    if "secret" in source and source["secret"] not in secret_keys:
                        problems.append(f"{label(doc)} reads {source['secret']}, missing from {SECRET_EXAMPLE.name}")
    return problems


def migration_problems(docs: Docs) -> list[str]:
    jobs = [d for d in docs if d["kind"] == "Job"]
    if len(jobs) != 1:
        return [f"{len(jobs)} migration Jobs"]
    [job] = jobs
    pod = job["spec"]["template"]["spec"]
    problems = pod_security_problems(label(job), pod)
    [container] = pod["containers"]
    if container.get("args") != ["migrate"]:
        problems.append(f"{label(job)}: args {container.get('args')} are not ['migrate']")
    if provided_env(docs, container).get("DATABASE_URL") != {
        "secret": "DATABASE_URL",
        "secret_name": SECRET_NAME,
    }:
        problems.append(f"{label(job)}: DATABASE_URL does not come from the Secret")
    if pod.get("restartPolicy") != "Never":
        problems.append(f"{label(job)}: a failed migration must not restart in place (restartPolicy Never)")
    return problems


# --------------------------------------------------------------------------------------------
# the manifests are valid Kubernetes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_document_is_valid_against_the_api_schemas(version: str) -> None:
    assert len(ALL_DOCUMENTS) >= 4 * len(SERVICES) + 4
    errors = []
    for doc in ALL_DOCUMENTS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{label(doc)} at {'.'.join(map(str, exc.path))}: {exc.message}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_validator_rejects_broken_documents(version: str) -> None:
    """Guards against a validation that passes everything: a misspelt field, a wrong type and an
    unknown API version are each refused."""
    deployment = find(PLATFORM, "Deployment", "registers")
    misspelt = copy.deepcopy(deployment)
    container = misspelt["spec"]["template"]["spec"]["containers"][0]
    container["livenesProbes"] = container.pop("livenessProbe")
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8001"
    for broken in (misspelt, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, version, strict=True)
    unknown_api = copy.deepcopy(find(PLATFORM, "HorizontalPodAutoscaler", "registers"))
    unknown_api["apiVersion"] = "autoscaling/v9"
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(unknown_api, version, strict=True)


# --------------------------------------------------------------------------------------------
# structure
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_service_runs_as_the_code_expects(service: str) -> None:
    assert service_problems(PLATFORM, service) == []


def test_platform_namespace_config_and_secrets() -> None:
    assert platform_problems(PLATFORM) == []


def test_migration_job_runs_migrate_and_is_applied_on_its_own() -> None:
    assert migration_problems(MIGRATION) == []
    # applied before the services, not with them
    assert not [d for d in PLATFORM if d["kind"] == "Job"]


def test_every_manifest_is_applied_by_a_kustomization() -> None:
    applied = set(resource_files(K8S)) | set(resource_files(K8S / "migrate"))
    kustomizations = set(K8S.rglob("kustomization.yaml"))
    stray = set(K8S.rglob("*.yaml")) - applied - kustomizations - NOT_APPLIED
    assert not stray, f"not applied by any kustomization: {sorted(map(str, stray))}"
    for directory in (K8S, K8S / "migrate"):
        spec = kustomization(directory)
        assert spec["namespace"] == NAMESPACE
        components = [(directory / c).resolve() for c in spec.get("components", [])]
        assert components == [IMAGE_COMPONENT], f"{directory}: the release image is set in one place"


def test_one_image_the_one_compose_builds() -> None:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    built = {svc["image"].rsplit(":", 1)[0] for svc in compose["services"].values() if "build" in svc}
    assert built == {image_name()}
    [release] = kustomization(IMAGE_COMPONENT)["images"]
    assert release["newTag"] and release["newName"].endswith("/" + image_name())


def test_secret_template_holds_only_placeholders_the_services_refuse() -> None:
    assert set(SECRET["stringData"]) == SECRET_SETTINGS
    assert all("CHANGE-ME" in value for value in SECRET["stringData"].values())
    with pytest.raises(ValidationError, match="jwt_secret"):
        PlatformSettings(jwt_secret=SECRET["stringData"]["JWT_SECRET"])
    with pytest.raises(ValidationError, match="secrets_key"):
        PlatformSettings(secrets_key=SECRET["stringData"]["SECRETS_KEY"])


def test_adapter_serves_the_lag_metric_the_autoscalers_use() -> None:
    values = yaml.safe_load(ADAPTER_VALUES.read_text(encoding="utf-8"))
    [rule] = values["rules"]["external"]
    assert rule["name"]["as"] == LAG_METRIC
    assert rule["seriesQuery"].startswith(LAG_METRIC + "{")
    assert set(CONSUMER_LAG._labelnames) == {"consumer", "topic", "partition"}  # what the query groups by
    assert "by (consumer)" in rule["metricsQuery"]


# --------------------------------------------------------------------------------------------
# the structural checks catch broken manifests
# --------------------------------------------------------------------------------------------


def _container(docs: Docs, service: str) -> dict[str, Any]:
    return find(docs, "Deployment", service)["spec"]["template"]["spec"]["containers"][0]


def _replace_env(name: str, *replacement: dict[str, Any]) -> Callable[[Docs], None]:
    """Replace (or with no replacement, drop) the notifications container's variable `name`."""

    def mutate(docs: Docs) -> None:
        container = _container(docs, "notifications")
        [index] = [i for i, e in enumerate(container["env"]) if e["name"] == name]
        container["env"][index : index + 1] = replacement

    return mutate


def _set(path: str, value: Any, kind: str = "Deployment", name: str = "thresholds") -> Callable[[Docs], None]:
    def mutate(docs: Docs) -> None:
        node: Any = find(docs, kind, name)
        *parents, last = path.split(".")
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value

    return mutate


def _remove(kind: str, name: str) -> Callable[[Docs], None]:
    return lambda docs: docs.remove(find(docs, kind, name))


def _add_config(key: str, value: str) -> Callable[[Docs], None]:
    return lambda docs: find(docs, "ConfigMap", "attendance-config")["data"].update({key: value})


CONTAINER = "spec.template.spec.containers.0"
BREAKAGES: dict[str, tuple[Callable[[Docs], None], str]] = {
    "readiness on /healthz": (_set(f"{CONTAINER}.readinessProbe.httpGet.path", "/healthz"), "readinessProbe"),
    "liveness on another port": (_set(f"{CONTAINER}.livenessProbe.httpGet.port", 9000), "livenessProbe"),
    "serving another port": (_set(f"{CONTAINER}.args.5", "9002"), "args"),
    "another image": (_set(f"{CONTAINER}.image", "python:3.11-slim"), "image"),
    "running as root": (_set("spec.template.spec.securityContext.runAsUser", 0), "runAsUser"),
    "no memory limit": (_set(f"{CONTAINER}.resources.limits", {"cpu": "2"}), "no limits memory"),
    "memory limit below the target": (_set(f"{CONTAINER}.resources.limits.memory", "256Mi"), "memory limit"),
    "no JWT_SECRET": (_replace_env("JWT_SECRET"), "JWT_SECRET is not provided"),
    "no public URL": (_replace_env("PUBLIC_URL"), "PUBLIC_URL is not provided"),
    "SMTP password as a value": (
        _replace_env("SMTP_PASSWORD", {"name": "SMTP_PASSWORD", "value": "hunter2"}),
        "SMTP_PASSWORD must come from the Secret",
    ),
    "misspelt env name": (
        _set(f"{CONTAINER}.env.0.name", "PUBLIC_URI"),
        "PUBLIC_URI is not a setting of thresholds",
    ),
    "misspelt config key": (_add_config("KAFKA_BOOTSTRAP_SERVER", "kafka:9092"), "not a setting of any service"),
    "secret in the ConfigMap": (_add_config("JWT_SECRET", "x" * 40), "JWT_SECRET is a secret"),
    "more replicas than partitions": (_set("spec.maxReplicas", 48, kind="HorizontalPodAutoscaler"), "maxReplicas"),
    "lag of another group": (
        _set("spec.metrics.1.external.metric.selector.matchLabels.consumer", "cme", kind="HorizontalPodAutoscaler"),
        LAG_METRIC,
    ),
    "Service to the wrong port": (_set("spec.ports.0.port", 8080, kind="Service", name="cme"), "Service/cme"),
    "no Service": (_remove("Service", "casework"), "no Service/casework"),
    "no HPA": (_remove("HorizontalPodAutoscaler", "registers"), "no HorizontalPodAutoscaler/registers"),
    "no PDB": (_remove("PodDisruptionBudget", "cme"), "no PodDisruptionBudget/cme"),
    "no Deployment": (_remove("Deployment", "notifications"), "no Deployment/notifications"),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_structural_checks_catch_a_broken_copy(breakage: str) -> None:
    mutate, expected = BREAKAGES[breakage]
    docs = copy.deepcopy(PLATFORM)
    mutate(docs)
    problems = platform_problems(docs) + [p for service in SERVICES for p in service_problems(docs, service)]
    assert any(expected in p for p in problems), problems


def test_migration_check_catches_a_job_that_does_not_migrate() -> None:
    docs = copy.deepcopy(MIGRATION)
    _set(f"{CONTAINER}.args", ["serve", "registers"], kind="Job", name="attendance-migrate")(docs)
    assert any("are not ['migrate']" in p for p in migration_problems(docs))
