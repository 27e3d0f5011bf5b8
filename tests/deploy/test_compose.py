"""docker-compose.yml stays runnable: docker-compose's own check, and a structural check that needs no Docker.

`docker-compose config -q` (or `docker compose config -q`) runs when the binary exists (`apt-get install -y
docker-compose` on Debian); without it that test is skipped loudly, or fails when TIERGATE_REQUIRE_COMPOSE is
set. The structural tests always run: every service has an image or a build, every file it mounts is in the
repository, the gateway config it mounts (either variant) is a valid tiergate config whose pools, database and
Redis name services of the file, and Prometheus scrapes services that exist, on the ports they listen on.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from engines.simulator import PROFILES
from gateway.inference.catalog import Catalog
from gateway.settings import Settings, load_settings
from gateway.state import price_book
from tests.deploy.shutdown import stop_seconds

ROOT = Path(__file__).parents[2]
COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
REQUIRE_ENV = "TIERGATE_REQUIRE_COMPOSE"
CONFIG_IN_CONTAINER = "/etc/tiergate/tiergate.yaml"
# the compose file's variants: the environment each is brought up with, and the profiles it enables
VARIANTS: dict[str, tuple[dict[str, str], set[str]]] = {
    "default": ({}, set()),
    "gpu": ({"TIERGATE_COMPOSE_CONFIG": "tiergate.gpu.yaml"}, {"gpu"}),
}
DEFAULT_SERVICES = {"gateway", "sim-fast", "sim-deliberate", "postgres", "redis", "prometheus", "grafana"}
GPU_SERVICES = {"vllm-fast", "vllm-deliberate"}
NGRAM = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4}

_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution, for the forms this file uses: $$, $VAR, ${VAR}, ${VAR:-default},
    ${VAR-default}. Anything else (${VAR:?error}, nested defaults) is refused, so the test stays honest."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        operator, default = match.group(2), match.group(3) or ""
        if operator is None:
            return env.get(name, "")
        if operator == ":-":
            return env.get(name) or default
        return env.get(name, default)

    result = _VARIABLE.sub(substitute, value)
    assert "${" not in result, f"unsupported interpolation in {value!r}"
    return result


def compose_file(variant: str = "default") -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    resolved: dict[str, Any] = interpolate(raw, VARIANTS[variant][0])
    return resolved


def services(variant: str = "default") -> dict[str, dict[str, Any]]:
    """The services that `up` starts in this variant (those without profiles, plus the variant's)."""
    profiles = VARIANTS[variant][1]
    every: dict[str, dict[str, Any]] = compose_file(variant)["services"]
    return {
        name: service
        for name, service in every.items()
        if not service.get("profiles") or set(service["profiles"]) & profiles
    }


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of a service's bind mounts (short syntax, relative to the repository)."""
    mounts = {}
    for volume in service.get("volumes", []):
        assert isinstance(volume, str), f"use the short volume syntax: {volume!r}"
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts[target] = (ROOT / source).resolve()
    return mounts


def host_path(service: dict[str, Any], container_path: str) -> Path:
    """Where a path inside the container comes from, through the service's bind mounts."""
    inside = PurePosixPath(container_path)
    for target, source in bind_mounts(service).items():
        if inside == PurePosixPath(target) or PurePosixPath(target) in inside.parents:
            return source / inside.relative_to(target)
    raise AssertionError(f"{container_path} is not in any bind mount of the service")


def flag(command: list[str], name: str) -> str:
    """The value after `name` in a command line (or of `name=value`)."""
    for index, word in enumerate(command):
        if word == name:
            return command[index + 1]
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    raise AssertionError(f"{name} not in {command}")


def listening_port(service_name: str, service: dict[str, Any]) -> int:
    command = service.get("command", [])
    if service_name == "gateway":
        return gateway_settings(service).server.port
    return int(flag(command, "--port"))


def gateway_settings(service: dict[str, Any]) -> Settings:
    """The gateway's settings as the container sees them: the mounted file plus the service's environment."""
    saved = {key: value for key, value in os.environ.items() if key.startswith("TIERGATE_")}
    for key in saved:
        del os.environ[key]
    try:
        os.environ.update({key: str(value) for key, value in service.get("environment", {}).items()})
        return load_settings(host_path(service, CONFIG_IN_CONTAINER))
    finally:
        for key in [key for key in os.environ if key.startswith("TIERGATE_")]:
            del os.environ[key]
        os.environ.update(saved)


def served_models(service: dict[str, Any]) -> set[str]:
    """The model names an engine service serves: vLLM's --served-model-name, or the simulator profile's."""
    command = service["command"]
    if "--served-model-name" in command:
        return {flag(command, "--served-model-name")}
    assert command[:2] == ["tiergate", "simulate"], command
    return set(PROFILES[flag(command, "--profile")].models)


# ----------------------------------------------------------------------------- docker-compose itself


def compose_command() -> list[str]:
    found = shutil.which("docker-compose")
    if found:
        return [found]
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0
    ):
        return [docker, "compose"]
    message = (
        "docker-compose IS NOT INSTALLED, so `docker-compose config -q` (Compose's own validation of"
        " docker-compose.yml) is SKIPPED. Install it: `apt-get install -y docker-compose` (Debian/Ubuntu), or"
        f" the Docker Compose plugin; set {REQUIRE_ENV}=1 to make this a failure."
    )
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(message)
    pytest.skip(message)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_docker_compose_validates_the_file(variant: str) -> None:
    environment, profiles = VARIANTS[variant]
    command = [*compose_command(), "-f", str(COMPOSE)]
    for profile in sorted(profiles):
        command += ["--profile", profile]
    env = {key: value for key, value in os.environ.items() if key not in ("TIERGATE_COMPOSE_CONFIG",)}
    checked = subprocess.run(
        [*command, "config", "-q"], capture_output=True, text=True, env={**env, **environment}, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rendered = subprocess.run(
        [*command, "config"], capture_output=True, text=True, env={**env, **environment}, check=False
    )
    assert rendered.returncode == 0, rendered.stderr
    resolved = yaml.safe_load(rendered.stdout)
    # Compose resolved the variables as this file's interpolate() does
    mounts = resolved["services"]["gateway"]["volumes"]
    config_mount = next(volume for volume in mounts if CONFIG_IN_CONTAINER in str(volume))
    expected = host_path(services(variant)["gateway"], CONFIG_IN_CONTAINER)
    assert str(expected) in str(config_mount)


# ----------------------------------------------------------------------------- structure, always


def test_the_services_of_each_profile() -> None:
    assert set(services("default")) == DEFAULT_SERVICES
    assert set(services("gpu")) == DEFAULT_SERVICES | GPU_SERVICES
    every = compose_file()["services"]
    for name in GPU_SERVICES:
        assert every[name]["profiles"] == ["gpu"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_service_has_an_image_or_a_build(variant: str) -> None:
    for name, service in services(variant).items():
        assert service.get("image") or service.get("build"), name
        if "build" in service:
            context = ROOT / service["build"]["context"]
            assert (context / service["build"].get("dockerfile", "Dockerfile")).is_file(), name
        if ":" in service.get("image", ""):
            assert not service["image"].endswith(":latest"), f"{name}: pin the image's tag"


def test_the_image_is_built_once_for_the_gateway_and_the_simulators() -> None:
    every = services()
    built = {
        name: (json.dumps(s["build"], sort_keys=True), s["image"])
        for name, s in every.items()
        if "build" in s
    }
    assert set(built) == {"gateway", "sim-fast", "sim-deliberate"}
    assert len(set(built.values())) == 1  # one build, one tag: the simulators use the gateway's image
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert dockerfile.startswith("#") and "FROM python:3.11-slim" in dockerfile
    assert "pip install ." in dockerfile
    assert 'CMD ["tiergate", "serve", "--config", "/etc/tiergate/tiergate.yaml"]' in dockerfile
    for copied in re.findall(r"^COPY (\S+)", dockerfile, flags=re.MULTILINE):
        assert (ROOT / copied).exists(), copied
    assert every["gateway"]["command"] == ["tiergate", "serve", "--config", CONFIG_IN_CONTAINER]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_depends_on_names_services_that_start_with_it(variant: str) -> None:
    started = services(variant)
    for name, service in started.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services("default"), (
                f"{name} depends on {dependency}, absent without a profile"
            )
            assert condition["condition"] in ("service_started", "service_healthy"), (name, dependency)
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in started[dependency], f"{dependency} has no healthcheck"
    assert set(started["gateway"]["depends_on"]) == {"postgres", "redis", "sim-fast", "sim-deliberate"}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_service_has_a_healthcheck(variant: str) -> None:
    for name, service in services(variant).items():
        test = service.get("healthcheck", {}).get("test")
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL"), name


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_mounted_file_is_in_the_repository(variant: str) -> None:
    compose = compose_file(variant)
    named = set(compose.get("volumes", {}))
    for name, service in services(variant).items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                path = (ROOT / source).resolve()
                assert path.exists(), f"{name} mounts {source}, which is not in the repository"
                assert path.is_relative_to(ROOT), f"{name} mounts {source}, outside the repository"
            else:
                assert source in named, f"{name} uses the volume {source}, not declared under volumes:"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_mounted_gateway_config_is_a_valid_tiergate_config(variant: str) -> None:
    started = services(variant)
    gateway = started["gateway"]
    settings = gateway_settings(gateway)  # load_settings raises ConfigError naming every bad key

    assert settings.server.host == "0.0.0.0"
    published = {port.rsplit(":", 1)[-1] for port in gateway["ports"]}
    assert published == {str(settings.server.port)}
    assert f":{settings.server.port}/healthz" in " ".join(gateway["healthcheck"]["test"])

    database = urlsplit(settings.database.url)
    assert database.scheme == "postgresql" and database.hostname == "postgres" and database.port == 5432
    postgres = started["postgres"]["environment"]
    assert (database.username, database.password) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
    )
    assert database.path == "/" + postgres["POSTGRES_DB"]
    assert settings.redis.url is not None and urlsplit(settings.redis.url).hostname == "redis"
    assert settings.auth.mode == "keys" and len(settings.auth.admin_tokens) == 1
    token = settings.auth.admin_tokens[0].get_secret_value()
    assert token == gateway["environment"]["TIERGATE_ADMIN_TOKEN"] and "dev-only" in token

    # every replica of every pool is an engine service of this variant, on its port, serving the models
    engines = {"default": {"sim-fast", "sim-deliberate"}, "gpu": GPU_SERVICES}[variant]
    used = set()
    for pool_name, pool in settings.pools.items():
        wanted = {
            offer.engine_model or model_id
            for model_id, model in settings.models.items()
            for offer in model.tiers.values()
            if offer.pool == pool_name
        }
        for replica in pool.replicas:
            host, port = replica.host, replica.port
            assert host in engines, (
                f"pools.{pool_name}: {replica} is no engine service of the {variant} profile"
            )
            assert port == listening_port(host, started[host]), f"pools.{pool_name}: {replica}"
            assert wanted <= served_models(started[host]), (pool_name, host, wanted)
            used.add(host)
    assert used == engines

    # the price book is mounted and prices every model and tier offered
    assert settings.pricing.book is not None
    book = host_path(gateway, str(settings.pricing.book))
    assert book.is_file()
    on_host = settings.model_copy(update={"pricing": settings.pricing.model_copy(update={"book": book})})
    assert price_book(on_host, Catalog(settings.models, settings.tiers.reasoning_effort)) is not None

    # the ledger journal is on the gateway's named volume
    journal = PurePosixPath(str(settings.ledger.journal_dir))
    volumes = {v.split(":")[1]: v.split(":")[0] for v in gateway["volumes"]}
    assert any(
        PurePosixPath(target) in journal.parents and source == "gateway-data"
        for target, source in volumes.items()
    )


def test_the_gpu_engines() -> None:
    every = services("gpu")
    fast, deliberate = every["vllm-fast"], every["vllm-deliberate"]
    assert json.loads(flag(fast["command"], "--speculative-config")) == NGRAM
    assert flag(deliberate["command"], "--reasoning-parser") == "qwen3"
    assert "--reasoning-parser" not in fast["command"] and "--speculative-config" not in deliberate["command"]
    devices = set()
    for service in (fast, deliberate):
        assert service["image"].startswith("vllm/vllm-openai:")
        assert service["entrypoint"] == ["vllm", "serve"]
        assert flag(service["command"], "--host") == "0.0.0.0"
        (reservation,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert reservation["driver"] == "nvidia" and reservation["capabilities"] == ["gpu"]
        devices.update(reservation["device_ids"])
        assert "/health" in " ".join(service["healthcheck"]["test"])
    assert devices == {"0", "1"}  # one GPU each by default


def test_dev_only_secrets_come_from_the_environment() -> None:
    raw = COMPOSE.read_text(encoding="utf-8")
    assert "DEV-ONLY" in raw
    for variable in ("TIERGATE_ADMIN_TOKEN", "POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD"):
        assert "${" + variable + ":-" in raw, variable
    chosen = {"TIERGATE_ADMIN_TOKEN": "a-real-admin-token-0123456789", "POSTGRES_PASSWORD": "pw-0123"}
    gateway = interpolate(yaml.safe_load(raw), chosen)["services"]["gateway"]
    settings = gateway_settings(gateway)
    assert settings.auth.admin_tokens[0].get_secret_value() == chosen["TIERGATE_ADMIN_TOKEN"]
    assert urlsplit(settings.database.url).password == "pw-0123"


def test_prometheus_scrapes_services_that_exist() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"tiergate", "engines"} <= set(jobs)
    every = services("gpu")
    scraped: dict[str, set[str]] = {}
    for name, job in jobs.items():
        for group in job.get("static_configs", []):
            for target in group["targets"]:
                host, port = target.rsplit(":", 1)
                assert host in every, f"job {name} scrapes {target}: no such compose service"
                assert int(port) == listening_port(host, every[host]), target
                scraped.setdefault(name, set()).add(host)
                if name == "engines":
                    assert group["labels"]["pool"] in ("fast", "deliberate"), target
    assert scraped["tiergate"] == {"gateway"}
    assert scraped["engines"] == {"sim-fast", "sim-deliberate"} | GPU_SERVICES
    prometheus = services()["prometheus"]
    assert host_path(prometheus, "/etc/prometheus/prometheus.yml") == PROMETHEUS.resolve()


def test_grafana_is_provisioned_from_the_repository() -> None:
    grafana = services()["grafana"]
    provisioning = host_path(grafana, "/etc/grafana/provisioning")
    assert provisioning == (ROOT / "deploy" / "grafana" / "provisioning").resolve()
    assert grafana["depends_on"] == {"prometheus": {"condition": "service_healthy"}}
    for provider in yaml.safe_load(
        (provisioning / "dashboards" / "tiergate.yml").read_text(encoding="utf-8")
    )["providers"]:
        dashboards = host_path(grafana, provider["options"]["path"])
        assert dashboards.is_dir() and list(dashboards.glob("*.json")), dashboards
    datasources = yaml.safe_load(
        (provisioning / "datasources" / "prometheus.yml").read_text(encoding="utf-8")
    )
    for source in datasources["datasources"]:
        url = urlsplit(source["url"])
        assert url.hostname == "prometheus" and "9090:9090" in " ".join(services()["prometheus"]["ports"])


def duration_s(text: str) -> float:
    """A Compose duration (`1m30s`, `45s`, `500ms`) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 0.000001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a Compose duration: {text!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def test_the_gateway_has_time_to_stop() -> None:
    """`docker compose stop` waits 10 s before SIGKILL unless told otherwise: the gateway needs the time to
    finish open requests and streams and to drain its journal into the ledger."""
    gateway = services()["gateway"]
    assert duration_s(str(gateway["stop_grace_period"])) >= stop_seconds() + 5
