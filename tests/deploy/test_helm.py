"""The Helm chart (deploy/helm/tiergate) stays installable and says what it means.

Structure: Chart.yaml is a valid v2 chart in step with the package's version, values.yaml matches
values.schema.json, templates use only values that exist, and the default `config` is a valid tiergate config
once the engines fill its pools.

Rendering: Helm's own engine renders the chart here, from PyPI's `helm-python-sdk` (Helm's Go SDK behind a C
ABI, no `helm` binary; a test extra, so this runs in the README's test command). Lint (as `helm lint
--strict`) and render (as `helm template`) run over the default values and every ci/*-values.yaml scenario,
and the rendered manifests are checked: required fields of every kind, selectors that select, probes on named
ports, the ConfigMap's tiergate.yaml loaded by the gateway's own loader, pools pointing at the engines'
Services, and every object against the Kubernetes OpenAPI schemas that PyPI's `kubernetes-validate` ships (no
network), for the oldest Kubernetes the chart supports and the newest the package knows.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import helm_python
import kubernetes_validate  # type: ignore[import-untyped]  # it ships no type information
import pytest
import yaml

from gateway.inference.catalog import Catalog
from gateway.settings import Settings, load_settings
from gateway.state import price_book
from tests.deploy.shutdown import stop_seconds

ROOT = Path(__file__).parents[2]
CHART = ROOT / "deploy" / "helm" / "tiergate"
PRICES = ROOT / "gateway" / "prices.yaml"
RELEASE = "tg"
NAMESPACE = "inference"
OLDEST_KUBERNETES = "1.25.0"  # Chart.yaml's kubeVersion
NGRAM = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4}
KINDS = {
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "Service"),
    ("v1", "ServiceAccount"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
    ("networking.k8s.io/v1", "Ingress"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
}
WORKLOADS = {"Deployment", "StatefulSet"}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# the values every install must give (the database's Secret), as docs/deploy.md's `helm install` gives them
REQUIRED = {"secrets": {"existingSecret": "tiergate-secrets"}}
# the scenarios rendered: the default values with REQUIRED, and each ci/<name>-values.yaml over the defaults
SCENARIOS = [
    "default",
    *sorted(p.name.removesuffix("-values.yaml") for p in (CHART / "ci").glob("*-values.yaml")),
]


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def values() -> dict[str, Any]:
    loaded: dict[str, Any] = load_yaml(CHART / "values.yaml")
    return loaded


def settings_of(text: str, tmp_path: Path) -> Settings:
    """A tiergate config as the gateway loads it, with no TIERGATE_* variable of this process in the way."""
    path = tmp_path / "tiergate.yaml"
    path.write_text(text, encoding="utf-8")
    saved = {key: value for key, value in os.environ.items() if key.startswith("TIERGATE_")}
    for key in saved:
        del os.environ[key]
    try:
        return load_settings(path)
    finally:
        os.environ.update(saved)


def optional_module(name: str, why: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        pytest.skip(f"{name} IS NOT INSTALLED, so {why} is SKIPPED: `pip install {name.replace('_', '-')}`.")


# ----------------------------------------------------------------------------- structure, always


def test_chart_yaml() -> None:
    chart = load_yaml(CHART / "Chart.yaml")
    assert chart["apiVersion"] == "v2" and chart["name"] == "tiergate" and chart["type"] == "application"
    assert re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?", chart["version"])
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert chart["appVersion"] == project["version"]  # the image's tag defaults to it
    assert chart["kubeVersion"] == f">={OLDEST_KUBERNETES}-0"
    assert "dependencies" not in chart  # renders offline


def coalesce(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Values over values, as Helm merges a -f file: maps merge, anything else replaces, null deletes."""
    merged = dict(base)
    for key, value in overlay.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = coalesce(merged[key], value)
        else:
            merged[key] = value
    return merged


def test_values_match_their_schema() -> None:
    jsonschema = optional_module("jsonschema", "the check of values.yaml against values.schema.json")
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(values(), schema, cls=jsonschema.Draft7Validator)
    for name in SCENARIOS:
        jsonschema.validate(coalesce(values(), scenario_values(name)), schema, cls=jsonschema.Draft7Validator)
    bad = {**values(), "engines": [{"name": "Fast_1", "pool": "fast"}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema, cls=jsonschema.Draft7Validator)


def _has_path(tree: Any, path: list[str]) -> bool:
    for part in path:
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


def test_templates_use_only_values_that_exist() -> None:
    defaults = values()
    engine_fields = set(defaults["engineDefaults"]) | {
        key for engine in defaults["engines"] for key in engine
    }
    templates = sorted((CHART / "templates").glob("*"))
    assert {path.name for path in templates} >= {
        "_helpers.tpl",
        "configmap.yaml",
        "statefulset.yaml",
        "engines.yaml",
        "hpa.yaml",
        "ingress.yaml",
        "pdb.yaml",
        "service.yaml",
        "servicemonitor.yaml",
        "NOTES.txt",
    }
    missing = []
    for path in templates:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", text):
            if not _has_path(defaults, match.group(1).split(".")[1:]):
                missing.append(f"{path.name}: .Values{match.group(1)}")
        for match in re.finditer(r"\$e\.([A-Za-z_][A-Za-z0-9_]*)", text):
            if match.group(1) not in engine_fields:
                missing.append(f"{path.name}: engine field {match.group(1)}")
    assert missing == []


def test_the_default_config_is_a_valid_tiergate_config(tmp_path: Path) -> None:
    """values.yaml's `config`, with each pool's replicas from its engines (as the chart fills them in)."""
    defaults = values()
    config = defaults["config"]
    engines = [engine for engine in defaults["engines"] if engine.get("enabled", True)]
    assert {engine["pool"] for engine in engines} == set(config["pools"])
    for name, pool in config["pools"].items():
        pool["replicas"] = [f"http://engine-{e['name']}:8000" for e in engines if e["pool"] == name]
    settings = settings_of(yaml.safe_dump(config), tmp_path)
    served = {engine["pool"]: engine["servedModelName"] for engine in engines}
    for model in settings.models.values():
        for offer in model.tiers.values():
            assert offer.engine_model == served[offer.pool]
    fast, deliberate = (next(e for e in engines if e["pool"] == pool) for pool in ("fast", "deliberate"))
    assert fast["speculativeConfig"] == NGRAM and not fast["reasoningParser"]
    assert deliberate["reasoningParser"] == "qwen3" and not deliberate["speculativeConfig"]
    assert defaults["engineDefaults"]["resources"]["limits"]["nvidia.com/gpu"] == 1


# ----------------------------------------------------------------------------- rendered


def scenario_values(name: str) -> dict[str, Any]:
    """What a scenario gives `helm template`: its ci/ file, and for external-engines the demo's price book
    (`--set-file priceBook=gateway/prices.yaml`)."""
    if name == "default":
        return REQUIRED
    given: dict[str, Any] = load_yaml(CHART / "ci" / f"{name}-values.yaml")
    if name == "external-engines":
        given["priceBook"] = PRICES.read_text(encoding="utf-8")
    return given


@pytest.fixture(scope="module")
def chart() -> Iterator[helm_python.Chart]:
    with helm_python.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: helm_python.Chart, given: dict[str, Any]) -> list[dict[str, Any]]:
    """`helm template` of the chart with these values: every object rendered, NOTES.txt left out."""
    files = chart.render(given, name=RELEASE, namespace=NAMESPACE)
    return [
        document
        for path, text in sorted(files.items())
        if not path.endswith("/NOTES.txt")
        for document in yaml.safe_load_all(text)
        if document
    ]


def refusal(chart: helm_python.Chart, given: dict[str, Any]) -> str:
    """The message of a render the chart refuses (values.schema.json, or the templates' `fail`/`required`)."""
    with pytest.raises(helm_python.HelmError) as refused:
        chart.render(given, name=RELEASE, namespace=NAMESPACE)
    return str(refused.value)


def notes(chart: helm_python.Chart, given: dict[str, Any]) -> str:
    """What `helm install` prints after installing (NOTES.txt)."""
    rendered: str = chart.render(given, name=RELEASE, namespace=NAMESPACE)["tiergate/templates/NOTES.txt"]
    return rendered


def by_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


@pytest.fixture(scope="module", params=SCENARIOS)
def scenario(request: pytest.FixtureRequest, chart: helm_python.Chart) -> tuple[str, list[dict[str, Any]]]:
    name: str = request.param
    return name, render(chart, scenario_values(name))


@pytest.mark.parametrize("name", SCENARIOS)
def test_helm_lint(name: str) -> None:
    """`helm lint --strict`: warnings count as errors."""
    report = helm_python.lint(CHART, scenario_values(name), strict=True, namespace=NAMESPACE)
    assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] >= 2] == [], report
    # and it would say so: a value its schema refuses
    bad = helm_python.lint(CHART, {"gateway": {"replicaCount": "two"}}, strict=True, namespace=NAMESPACE)
    assert any("/gateway/replicaCount" in error for error in bad["errors"]), bad


def test_helm_refuses_what_would_misbehave(chart: helm_python.Chart) -> None:
    engines = values()["engines"]
    sqlite = {"database": {"sqlite": True}}
    cases: dict[str, dict[str, Any]] = {
        # more than one replica on SQLite: each pod would have its own tenants and keys
        "more than one gateway replica": {**sqlite, "gateway": {"replicaCount": 2}},
        "more than one gateway replica ": {**sqlite, "autoscaling": {"enabled": True}},
        # a pool nothing serves
        "config.pools.fast has no replicas": {
            **REQUIRED,
            "engines": [{**engines[0], "enabled": False}, engines[1]],
        },
        # a pool name that cannot be a TIERGATE_POOLS__<POOL>__ variable
        "does not match pattern": {
            **REQUIRED,
            "engines": [engines[0], {**engines[1], "pool": "deli-berate"}],
        },
        "appears twice": {**REQUIRED, "engines": [engines[0], {**engines[1], "name": engines[0]["name"]}]},
    }
    for reason, given in cases.items():
        assert reason.strip() in refusal(chart, given), reason
    assert render(chart, {"gateway": {"replicaCount": 2}, "secrets": {"existingSecret": "s"}})


def test_the_database_is_postgresql_unless_sqlite_is_chosen(chart: helm_python.Chart) -> None:
    """No database given is a refusal that says what to give, not SQLite on the pod's disk."""
    message = refusal(chart, {})
    assert "tiergate needs PostgreSQL" in message
    assert all(
        value in message for value in ("secrets.existingSecret", "database-url", "database.sqlite=true")
    )
    # a Secret the chart makes is not a database: it must hold the URL
    assert "tiergate needs PostgreSQL" in refusal(chart, {"secrets": {"adminTokens": ["a" * 20]}})
    # SQLite only by choosing it
    sqlite_url = {"config": {"database": {"url": "sqlite:////var/lib/tiergate/t.sqlite3"}}}
    assert "Set database.sqlite=true" in refusal(chart, sqlite_url)
    assert "is not PostgreSQL" in refusal(chart, {"secrets": {"databaseUrl": "sqlite:///t.sqlite3"}})
    postgres = {"secrets": {"databaseUrl": "postgresql://u:p@db:5432/d"}}
    assert "choose one" in refusal(chart, {"database": {"sqlite": True}, **postgres})
    for given in (REQUIRED, postgres, {"config": {"database": {"url": "postgresql://u@db:5432/d"}}}):
        (config_map,) = by_kind(render(chart, given), "ConfigMap").values()
        assert "sqlite" not in config_map["data"]["tiergate.yaml"]


def test_the_grace_period_covers_the_drain(chart: helm_python.Chart) -> None:
    """The kubelet's SIGKILL comes after the preStop sleep, the open requests and the journal's drain."""
    for pre_stop in (5, 20):
        needed = pre_stop + stop_seconds()
        short = {
            **REQUIRED,
            "gateway": {"preStopSleepSeconds": pre_stop, "terminationGracePeriodSeconds": needed},
        }
        assert "terminationGracePeriodSeconds must be at least" in refusal(chart, short)
        enough = {
            **REQUIRED,
            "gateway": {"preStopSleepSeconds": pre_stop, "terminationGracePeriodSeconds": 300},
        }
        (gateway,) = by_kind(render(chart, enough), "StatefulSet").values()
        (container,) = gateway["spec"]["template"]["spec"]["containers"]
        assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(pre_stop)]


def test_the_ingress(chart: helm_python.Chart) -> None:
    """Off by default; on, the OpenAI API of the gateway's Service, with or without a host."""
    assert not by_kind(render(chart, REQUIRED), "Ingress")
    anyhost = {"enabled": True, "hosts": [{"paths": [{"path": "/", "pathType": "Prefix"}]}]}
    for ingress_values, rules in (
        ({"enabled": True}, [("tiergate.example.com", "/v1")]),
        (anyhost, [(None, "/")]),
    ):
        (ingress,) = by_kind(render(chart, {**REQUIRED, "ingress": ingress_values}), "Ingress").values()
        got = [
            (rule.get("host"), path["path"])
            for rule in ingress["spec"]["rules"]
            for path in rule["http"]["paths"]
        ]
        assert got == rules
        assert "ingressClassName" not in ingress["spec"]  # the cluster's default class
        for version in (OLDEST_KUBERNETES, kubernetes_validate.utils.latest_version()):
            kubernetes_validate.validate(ingress, version, strict=True)


def test_the_notes_warn_of_what_is_ephemeral(chart: helm_python.Chart) -> None:
    assert "WARNING" not in notes(chart, REQUIRED)
    warned = notes(chart, scenario_values("try-it-out"))
    assert "WARNING: tenants, keys, budgets and the ledger are in SQLite" in warned
    assert "ALL OF IT IS LOST" in warned  # on an emptyDir
    assert "WARNING: the ledger journal is on an emptyDir" in warned
    sqlite_kept = notes(chart, {"database": {"sqlite": True}})
    assert (
        "in SQLite" in sqlite_kept
        and "LOST" not in sqlite_kept
        and "journal is on an emptyDir" not in sqlite_kept
    )
    journal_only = notes(chart, {**REQUIRED, "gateway": {"persistence": {"enabled": False}}})
    assert "SQLite" not in journal_only and "WARNING: the ledger journal is on an emptyDir" in journal_only
    # engines that download their weights again on each restart are named
    assert "the engines fast, deliberate keep their model weights on an emptyDir" in notes(chart, REQUIRED)
    assert "model weights" not in notes(chart, scenario_values("scale-out"))  # they have a claim


def _check_object(manifest: dict[str, Any]) -> None:
    """The fields every object of these kinds needs, whatever the cluster (no schema needed)."""
    key = (manifest.get("apiVersion"), manifest.get("kind"))
    assert key in KINDS, f"unexpected object {key}: add it to KINDS and check it here"
    metadata = manifest["metadata"]
    assert DNS_LABEL.match(metadata["name"]) and len(metadata["name"]) <= 63, metadata["name"]
    assert "namespace" not in metadata  # helm --namespace decides
    for label, value in {**metadata.get("labels", {})}.items():
        assert isinstance(value, str) and len(value) <= 63, (label, value)
    kind, spec = manifest["kind"], manifest.get("spec", {})
    if kind in WORKLOADS:
        selector = spec["selector"]["matchLabels"]
        pod = spec["template"]
        assert selector.items() <= pod["metadata"]["labels"].items()
        claims = {claim["metadata"]["name"] for claim in spec.get("volumeClaimTemplates", [])}
        for container in pod["spec"]["containers"]:
            assert container["name"] and container["image"]
            ports = {port["name"]: port["containerPort"] for port in container.get("ports", [])}
            assert all(isinstance(port, int) for port in ports.values())
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                if probe in container:
                    assert container[probe]["httpGet"]["port"] in ports, (metadata["name"], probe)
            for env in container.get("env", []):
                assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env["name"]), env
                assert ("value" in env) != ("valueFrom" in env), env
            volumes = {volume["name"] for volume in pod["spec"].get("volumes", [])}
            assert not volumes & claims  # a claim template's name is the pod's volume
            assert {mount["name"] for mount in container.get("volumeMounts", [])} <= volumes | claims
    elif kind == "Service":
        assert spec["selector"] and all(isinstance(port["port"], int) for port in spec["ports"])
    elif kind == "ConfigMap":
        assert all(isinstance(value, str) for value in manifest["data"].values())
    elif kind == "Secret":
        assert all(isinstance(value, str) for value in manifest["stringData"].values())
    elif kind == "HorizontalPodAutoscaler":
        assert spec["scaleTargetRef"]["kind"] in WORKLOADS
        assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
        assert spec["metrics"]
    elif kind == "PodDisruptionBudget":
        assert ("minAvailable" in spec) != ("maxUnavailable" in spec)
        assert spec["selector"]["matchLabels"]
    elif kind == "Ingress":
        hosts = {rule.get("host") for rule in spec["rules"]}
        assert all(set(tls["hosts"]) <= hosts for tls in spec.get("tls", []))
        for rule in spec["rules"]:
            assert rule["http"]["paths"]
    elif kind == "ServiceMonitor":
        assert spec["selector"]["matchLabels"] and spec["endpoints"]
        assert all(endpoint["port"] and endpoint["path"].startswith("/") for endpoint in spec["endpoints"])


def test_rendered_objects_have_what_their_kind_needs(scenario: tuple[str, list[dict[str, Any]]]) -> None:
    _, manifests = scenario
    assert manifests
    names = [(m["kind"], m["metadata"]["name"]) for m in manifests]
    assert len(names) == len(set(names))
    for manifest in manifests:
        _check_object(manifest)
    # every Service selects the pods of one workload, on a port they name
    workloads = [m for m in manifests if m["kind"] in WORKLOADS]
    for service in by_kind(manifests, "Service").values():
        selected = [
            w
            for w in workloads
            if service["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(selected) == 1, service["metadata"]["name"]
        ports = {p["name"] for c in selected[0]["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        assert {port["targetPort"] for port in service["spec"]["ports"]} <= ports
    # a StatefulSet's governing Service is headless and selects it
    for stateful in by_kind(manifests, "StatefulSet").values():
        governing = by_kind(manifests, "Service")[stateful["spec"]["serviceName"]]
        assert governing["spec"]["clusterIP"] == "None"
        assert governing["spec"]["selector"] == stateful["spec"]["selector"]["matchLabels"]
    # each ServiceMonitor scrapes one Service (a second would scrape the same pods twice)
    for monitor in by_kind(manifests, "ServiceMonitor").values():
        wanted = monitor["spec"]["selector"]["matchLabels"].items()
        services = [
            s for s in by_kind(manifests, "Service").values() if wanted <= s["metadata"]["labels"].items()
        ]
        expected = 1 if monitor["metadata"]["labels"]["app.kubernetes.io/component"] == "gateway" else None
        assert services and (expected is None or len(services) == expected), monitor["metadata"]["name"]


@pytest.mark.parametrize("kubernetes", [OLDEST_KUBERNETES, "latest"])
def test_rendered_objects_match_the_kubernetes_schemas(
    scenario: tuple[str, list[dict[str, Any]]], kubernetes: str
) -> None:
    version = kubernetes_validate.utils.latest_version() if kubernetes == "latest" else kubernetes
    _, manifests = scenario
    checked = 0
    for manifest in manifests:
        if manifest["apiVersion"] == "monitoring.coreos.com/v1":
            continue  # a CRD: no schema in the package; _check_object covers it
        try:
            kubernetes_validate.validate(manifest, version, strict=True)  # strict: unknown fields are errors
        except kubernetes_validate.ValidationError as error:
            pytest.fail(
                f"{manifest['kind']}/{manifest['metadata']['name']} on Kubernetes {version}: {error.message}"
            )
        checked += 1
    assert checked


def test_the_config_map_is_a_valid_tiergate_config(
    scenario: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    name, manifests = scenario
    (config_map,) = by_kind(manifests, "ConfigMap").values()
    settings = settings_of(config_map["data"]["tiergate.yaml"], tmp_path)
    assert settings.server.host == "0.0.0.0"
    services = by_kind(manifests, "Service")
    engine_services = {
        n: s
        for n, s in services.items()
        if s["metadata"]["labels"]["app.kubernetes.io/component"] == "engine"
    }
    for pool_name, pool in settings.pools.items():
        for replica in pool.replicas:
            if name == "external-engines":
                assert urlsplit(str(replica)).hostname and not engine_services
                continue
            service = engine_services[str(replica.host)]
            assert service["metadata"]["labels"]["tiergate.io/pool"] == pool_name
            assert replica.port == service["spec"]["ports"][0]["port"]
    if name != "external-engines":
        assert {str(r.host) for pool in settings.pools.values() for r in pool.replicas} == set(
            engine_services
        )
    if "prices.yaml" in config_map["data"]:
        assert str(settings.pricing.book) == "/etc/tiergate/prices.yaml"
        book = tmp_path / "prices.yaml"
        book.write_text(config_map["data"]["prices.yaml"], encoding="utf-8")
        on_disk = settings.model_copy(update={"pricing": settings.pricing.model_copy(update={"book": book})})
        assert price_book(on_disk, Catalog(settings.models, settings.tiers.reasoning_effort)) is not None
    else:
        assert settings.pricing.book is None


def test_the_gateway(scenario: tuple[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    name, manifests = scenario
    gateway = by_kind(manifests, "StatefulSet")[f"{RELEASE}-tiergate"]
    (config_map,) = by_kind(manifests, "ConfigMap").values()
    port = settings_of(config_map["data"]["tiergate.yaml"], tmp_path).server.port
    pod = gateway["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["tiergate", "serve", "--config", "/etc/tiergate/tiergate.yaml"]
    assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    mounts_by_name = {name: path for path, name in mounts.items()}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes[mounts["/etc/tiergate"]]["configMap"]["name"] == config_map["metadata"]["name"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True and "/tmp" in mounts
    assert "checksum/config" in gateway["spec"]["template"]["metadata"]["annotations"]
    env = {item["name"]: item for item in container["env"]}
    assert env["TIERGATE_CONFIG"]["value"] == "/etc/tiergate/tiergate.yaml"

    # the journal (and SQLite, where chosen) is on the data volume: a claim of each pod's own, unless the
    # values give that up for an emptyDir
    assert settings_of(config_map["data"]["tiergate.yaml"], tmp_path).ledger.journal_dir.is_relative_to(
        Path("/var/lib/tiergate")
    )
    assert mounts["/var/lib/tiergate"] == "data"
    claims = {claim["metadata"]["name"]: claim for claim in gateway["spec"].get("volumeClaimTemplates", [])}
    if name == "try-it-out":
        assert not claims and volumes["data"]["emptyDir"]
    else:
        assert "data" not in volumes
        assert claims["data"]["spec"]["accessModes"] == ["ReadWriteOnce"]
        assert claims["data"]["spec"]["resources"]["requests"]["storage"] == "1Gi"
        # claim templates cannot change after install: no label that an upgrade changes
        assert claims["data"]["metadata"]["labels"] == gateway["spec"]["selector"]["matchLabels"]
        # an emptyDir holds nothing that must outlive the pod: scratch space only
        assert [mounts_by_name[v] for v, volume in volumes.items() if "emptyDir" in volume] == ["/tmp"]
    assert gateway["spec"]["podManagementPolicy"] == "Parallel"
    (pre_stop,) = container["lifecycle"]["preStop"]["exec"]["command"][1:]
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop) + stop_seconds()

    service = by_kind(manifests, "Service")[f"{RELEASE}-tiergate"]
    assert service["spec"]["selector"] == gateway["spec"]["selector"]["matchLabels"]
    assert service["metadata"]["labels"]["tiergate.io/scrape-job"] == "tiergate"
    pdb = by_kind(manifests, "PodDisruptionBudget")[f"{RELEASE}-tiergate"]
    assert pdb["spec"]["selector"]["matchLabels"] == gateway["spec"]["selector"]["matchLabels"]

    # a PodDisruptionBudget always, over the gateway's pods; an Ingress where asked, to the gateway's Service
    assert (
        pdb["spec"]["selector"]["matchLabels"].items()
        <= gateway["spec"]["template"]["metadata"]["labels"].items()
    )
    ingresses = by_kind(manifests, "Ingress")
    for ingress in ingresses.values():
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] == service["metadata"]["name"]
                assert backend["port"]["name"] in {port["name"] for port in service["spec"]["ports"]}

    hpas = by_kind(manifests, "HorizontalPodAutoscaler")
    monitors = by_kind(manifests, "ServiceMonitor")
    if name == "scale-out":
        (ingress,) = ingresses.values()
        assert ingress["spec"]["ingressClassName"] == "nginx"
        assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
        (rule,) = ingress["spec"]["rules"]
        assert rule["host"] == "api.example.com"
        assert [(p["path"], p["pathType"]) for p in rule["http"]["paths"]] == [
            ("/v1", "Prefix"),
            ("/admin", "Prefix"),
        ]
        assert ingress["spec"]["tls"] == [{"secretName": "api-example-com-tls", "hosts": ["api.example.com"]}]
    else:
        assert not ingresses  # off by default
    if name == "scale-out":
        assert "replicas" not in gateway["spec"]  # the HPA owns it
        hpa = hpas[f"{RELEASE}-tiergate"]
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "name": f"{RELEASE}-tiergate",
        }
        (metric,) = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
        assert container["resources"]["requests"]["cpu"]  # utilization is relative to the request
        assert pdb["spec"] == {**pdb["spec"], "minAvailable": 2}
        secret_env = {
            "TIERGATE_AUTH__ADMIN_TOKENS": "admin-tokens",
            "TIERGATE_DATABASE__URL": "database-url",
            "TIERGATE_REDIS__URL": "redis-url",
            "TIERGATE_POOLS__FAST__API_KEY": "engine-api-key",
            "TIERGATE_POOLS__DELIBERATE__API_KEY": "engine-api-key",
        }
        for variable, key in secret_env.items():
            assert env[variable]["valueFrom"]["secretKeyRef"] == {
                "name": "tiergate-secrets",
                "key": key,
                "optional": True,
            }
        assert not by_kind(manifests, "Secret")  # the existing Secret is not the chart's
        gateway_monitor, engines_monitor = (
            monitors[f"{RELEASE}-tiergate"],
            monitors[f"{RELEASE}-tiergate-engines"],
        )
        assert gateway_monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert (
            gateway_monitor["spec"]["selector"]["matchLabels"].items()
            <= service["metadata"]["labels"].items()
        )
        assert (
            gateway_monitor["spec"]["jobLabel"]
            == engines_monitor["spec"]["jobLabel"]
            == "tiergate.io/scrape-job"
        )
        assert gateway_monitor["spec"]["endpoints"][0]["path"] == "/metrics"
        assert gateway_monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    else:
        assert gateway["spec"]["replicas"] == 1 and not hpas and not monitors
    if name == "external-engines":
        (secret,) = by_kind(manifests, "Secret").values()
        assert json.loads(secret["stringData"]["admin-tokens"]) == ["a-test-admin-token-0123456789"]
        assert (
            env["TIERGATE_AUTH__ADMIN_TOKENS"]["valueFrom"]["secretKeyRef"]["name"]
            == secret["metadata"]["name"]
        )
        assert "checksum/secret" in gateway["spec"]["template"]["metadata"]["annotations"]
    database_url = env.get("TIERGATE_DATABASE__URL", {}).get("valueFrom", {}).get("secretKeyRef")
    settings = settings_of(config_map["data"]["tiergate.yaml"], tmp_path)
    if name == "default":
        # the Secret is the only source of the database: a Secret without the key stops the pod
        assert database_url == {"name": "tiergate-secrets", "key": "database-url", "optional": False}
        assert settings.database.url == "sqlite:///tiergate.sqlite3"  # tiergate's default: never used
    elif name == "try-it-out":
        assert set(env) == {"TIERGATE_CONFIG"}  # no secrets given: nothing refers to a Secret
        assert settings.database.url == "sqlite:////var/lib/tiergate/tiergate.sqlite3"
    else:
        assert database_url is not None and settings.database.url.startswith(("postgresql://", "sqlite"))


def test_the_engines(scenario: tuple[str, list[dict[str, Any]]]) -> None:
    name, manifests = scenario
    deployments = {
        n: d
        for n, d in by_kind(manifests, "Deployment").items()
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "engine"
    }
    services = by_kind(manifests, "Service")
    expected = {
        "default": {"fast", "deliberate"},
        "try-it-out": {"fast", "deliberate"},
        "scale-out": {"fast-a", "fast-b", "deliberate"},  # `spare` is disabled
        "external-engines": set(),
    }[name]
    assert set(deployments) == {f"{RELEASE}-tiergate-engine-{engine}" for engine in expected}
    for engine_name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        args = container["args"]
        assert container["command"] == ["vllm", "serve"] and container["image"].startswith(
            "vllm/vllm-openai:"
        )
        assert args[args.index("--port") + 1] == str(container["ports"][0]["containerPort"])
        assert args[args.index("--host") + 1] == "0.0.0.0"
        pool = deployment["metadata"]["labels"]["tiergate.io/pool"]
        if pool == "fast":
            assert json.loads(args[args.index("--speculative-config") + 1]) == NGRAM
            assert "--reasoning-parser" not in args
        else:
            assert args[args.index("--reasoning-parser") + 1] == "qwen3"
            assert "--speculative-config" not in args
        gpus = container["resources"]["limits"]["nvidia.com/gpu"]
        if "--tensor-parallel-size" in args:
            assert int(args[args.index("--tensor-parallel-size") + 1]) == gpus == 2
        else:
            assert gpus == 1
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["path"] == "/health"
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        service = services[engine_name]
        assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
        assert service["metadata"]["labels"]["tiergate.io/scrape-job"] == "engines"
        assert service["metadata"]["labels"]["tiergate.io/pool"] == pool
        if name == "scale-out":
            env = {item["name"]: item for item in container["env"]}
            assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "token"}
            assert env["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "engine-api-key"
            volumes = {volume["name"]: volume for volume in pod["volumes"]}
            assert volumes["cache"]["persistentVolumeClaim"] == {"claimName": "hf-cache"}
