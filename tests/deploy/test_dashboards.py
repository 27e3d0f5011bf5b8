"""The Grafana dashboards of deploy/grafana: their structure, the metric names they use, and every panel's
query run against a real Prometheus that scraped a running gateway and two simulated engines.

The structural tests always run. The Prometheus test needs the `prometheus` binary (`apt-get install -y
prometheus`); without it, it is skipped loudly, or fails when TIERGATE_REQUIRE_PROMETHEUS is set.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from engines.simulator import create_simulator_app, profile
from engines.simulator.latency import Scheduler
from engines.simulator.metrics import SimulatorMetrics
from gateway import create_app
from tests.chat import user
from tests.conftest import gateway_settings, wait_ready
from tests.processes import free_port
from tests.servers import serving

ROOT = Path(__file__).parents[2]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
METRICS_DOC = ROOT / "docs" / "metrics.md"
NAMES = ("overview", "tiers-and-quality", "billing", "engines")
REQUIRE_ENV = "TIERGATE_REQUIRE_PROMETHEUS"

# what Grafana puts in place of its built-in interval variables, for the queries run here (1 s scrapes)
BUILTINS = {"$__rate_interval": "30s", "$__interval": "15s", "$__range": "60s"}
METRIC_NAME = re.compile(r"\btiergate_[a-z0-9_]+|\bvllm:[a-z0-9_:]+")
LABEL_VALUES = re.compile(r"^label_values\((.*),\s*([a-zA-Z_]\w*)\)$", re.DOTALL)
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count"),
}


def load(name: str) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads((DASHBOARDS / f"{name}.json").read_text(encoding="utf-8"))
    return dashboard


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside rows included; rows themselves are not panels with queries."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    for panel in panels(dashboard):
        for target in panel["targets"]:
            yield f"panel {panel['id']} {panel['title']!r} target {target['refId']}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            yield f"variable {variable['name']!r}", variable_query(variable)


def variable_query(variable: dict[str, Any]) -> str:
    query = variable["query"]
    text: str = query["query"] if isinstance(query, dict) else query
    return text


def documented_metrics() -> set[str]:
    """Every series name docs/metrics.md allows: counters with `_total`, histograms' `_bucket/_sum/_count`."""
    names: set[str] = set()
    for line in METRICS_DOC.read_text(encoding="utf-8").splitlines():
        row = re.match(r"\|\s*`(tiergate_[a-z0-9_]+)`\s*\|\s*([a-z]+)", line)
        if row is None:
            continue
        name, kind = row.groups()
        base = name.removesuffix("_total") if kind == "counter" else name
        names.update(base + suffix for suffix in SUFFIXES[kind])
    return names


def simulator_metrics() -> set[str]:
    """Every series name the simulator's /metrics serves (engines/simulator/metrics.py), as exposed."""
    exposed = SimulatorMetrics(("m",), Scheduler(("m",), 1, 1024)).exposition().decode()
    return {sample.name for family in text_string_to_metric_families(exposed) for sample in family.samples}


def substitute(expr: str, dashboard: dict[str, Any]) -> str:
    """The query as Grafana would send it with every variable on `All` (`.*`)."""
    values = dict(BUILTINS)
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "datasource":
            values[f"${variable['name']}"] = variable.get("allValue") or ".*"
    for name in sorted(values, key=len, reverse=True):  # $model before $mod..., $__rate_interval first
        bare = name.removeprefix("$")
        expr = expr.replace(f"${{{bare}}}", values[name]).replace(f"[[{bare}]]", values[name])
        expr = expr.replace(name, values[name])
    assert "$" not in expr, f"a variable is left in {expr!r}"
    return expr


# ------------------------------------------------------------------------------------------- structure


@pytest.mark.parametrize("name", NAMES)
def test_dashboard_structure(name: str) -> None:
    dashboard = load(name)
    assert dashboard["uid"] == f"tiergate-{name}"
    assert 36 <= dashboard["schemaVersion"] <= 39
    assert "tiergate" in dashboard["tags"]
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["datasource"]["current"]["value"] == "prometheus"
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == datasource, variable["name"]
            assert LABEL_VALUES.match(variable_query(variable)), variable["name"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    ids += [inner["id"] for panel in dashboard["panels"] for inner in panel.get("panels", [])]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {name}: {sorted(ids)}"
    found = list(panels(dashboard))
    assert found, f"{name} has no panels"
    for panel in found:
        where = f"{name}: panel {panel['id']} {panel.get('title')!r}"
        assert panel["type"] in ("timeseries", "stat", "bargauge"), where
        assert panel["title"] and panel.get("description"), where
        assert panel["datasource"] == datasource, where
        assert (
            set(panel["gridPos"]) == {"h", "w", "x", "y"}
            and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        )
        assert panel["targets"], f"{where} has no target"
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), where
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), f"{where} target {target['refId']} has no expr"
            assert target["datasource"] == datasource, where


@pytest.mark.parametrize("name", NAMES)
def test_dashboards_use_only_metrics_that_exist(name: str) -> None:
    """tiergate_ names as docs/metrics.md lists them, vllm: names as the simulator exposes them."""
    known = documented_metrics() | simulator_metrics()
    assert "tiergate_requests_total" in known and "tiergate_reasoning_tokens_bucket" in known
    assert "vllm:spec_decode_num_accepted_tokens_total" in known
    unknown = [
        f"{where}: {metric}"
        for where, expr in expressions(load(name))
        for metric in METRIC_NAME.findall(expr)
        if metric not in known
    ]
    assert not unknown, "metrics neither in docs/metrics.md nor served by the simulator:\n" + "\n".join(
        unknown
    )


def test_every_documented_metric_has_a_panel() -> None:
    used = {
        metric
        for name in NAMES
        for _, expr in expressions(load(name))
        for metric in METRIC_NAME.findall(expr)
    }
    families = {re.sub(r"_(total|bucket|sum|count)$", "", metric) for metric in used}
    documented = {re.sub(r"_(total|bucket|sum|count)$", "", metric) for metric in documented_metrics()}
    assert documented <= families, f"documented metrics no dashboard shows: {sorted(documented - families)}"


def test_provisioning() -> None:
    datasources = yaml.safe_load(
        (PROVISIONING / "datasources" / "prometheus.yml").read_text(encoding="utf-8")
    )
    (prometheus,) = datasources["datasources"]
    assert (prometheus["uid"], prometheus["type"]) == ("prometheus", "prometheus")
    assert prometheus["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "tiergate.yml").read_text(encoding="utf-8"))
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    assert sorted(path.stem for path in DASHBOARDS.glob("*.json")) == sorted(NAMES)
    uids = [load(name)["uid"] for name in NAMES]
    assert len(uids) == len(set(uids))


def test_prometheus_config_is_valid() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (it comes with `apt-get install -y prometheus`)")
    config = ROOT / "deploy" / "prometheus" / "prometheus.yml"
    checked = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_substitution() -> None:
    dashboard = {
        "templating": {"list": [{"name": "model", "type": "query"}, {"name": "mod", "type": "query"}]}
    }
    expr = 'rate(x{model=~"$model", m=~"${mod}"}[$__rate_interval]) / rate(y[$__interval])'
    assert substitute(expr, dashboard) == 'rate(x{model=~".*", m=~".*"}[30s]) / rate(y[15s])'


# ----------------------------------------------------------------------------- against a real Prometheus

ADMIN = "admin-token-dashboards-0123456789"
LOAD_SECONDS = 15.0
# quick engines: the whole test should take well under a minute
FAST = profile("fast", ttft_base_s=0.005, itl_s=0.002, output_tokens_range=(8, 24))
DELIBERATE = profile(
    "deliberate", ttft_base_s=0.005, itl_s=0.002, output_tokens_range=(8, 24), reasoning_tokens_range=(12, 30)
)
# a low floor the simulator's reasoning sometimes misses: extensions happen, and the floor is met or not
DELIBERATION = {
    "efforts": {
        "low": {"floor": 24, "cap": 400, "samples": 1, "max_extensions": 1},
        "medium": {"floor": 40, "cap": 400, "samples": 1, "max_extensions": 1},
        "high": {"floor": 40, "cap": 400, "samples": 3, "max_extensions": 1},
    }
}
MESSAGES = user("What is 17 * 23? [task: 17 * 23]")


@pytest.fixture
def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        message = (
            "PROMETHEUS IS NOT INSTALLED, so the dashboards' queries are NOT CHECKED against real data. "
            "Install it (`apt-get install -y prometheus` on Debian/Ubuntu, or put the `prometheus` binary on "
            f"PATH); set {REQUIRE_ENV}=1 to make this a failure."
        )
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(message)
        pytest.skip(message)
    return found


class Prometheus:
    """A real Prometheus on a free port, its storage in a temporary directory, scraping every second."""

    def __init__(self, binary: str, folder: Path, gateway: str, engines: dict[str, str]) -> None:
        def target(url: str) -> str:
            return url.removeprefix("http://")

        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [
                {"job_name": "tiergate", "static_configs": [{"targets": [target(gateway)]}]},
                {  # as deploy/prometheus/prometheus.yml: job `engines`, a `pool` label per engine
                    "job_name": "engines",
                    "static_configs": [
                        {"targets": [target(url)], "labels": {"pool": pool}} for pool, url in engines.items()
                    ],
                },
            ],
        }
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
        self.url = f"http://127.0.0.1:{free_port()}"
        self._log = (folder / "prometheus.log").open("w", encoding="utf-8")
        self._process = subprocess.Popen(
            [
                binary,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address={self.url.removeprefix('http://')}",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self._logfile = folder / "prometheus.log"

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise AssertionError(f"prometheus exited at start:\n{self.log()}")
            try:
                if httpx.get(self.url + "/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"prometheus never became ready:\n{self.log()}")
            time.sleep(0.1)

    def targets_up(self) -> dict[str, str]:
        reply = httpx.get(self.url + "/api/v1/targets", timeout=5).json()
        return {target["scrapeUrl"]: target["health"] for target in reply["data"]["activeTargets"]}

    def query(self, expr: str) -> dict[str, Any]:
        reply: dict[str, Any] = httpx.get(
            self.url + "/api/v1/query", params={"query": expr}, timeout=10
        ).json()
        return reply

    def log(self) -> str:
        self._log.flush()
        return self._logfile.read_text(encoding="utf-8")[-4000:]

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)
        self._log.close()


def admin(gateway: str, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.request(
        method, f"{gateway}/admin{path}", json=body, headers={"authorization": f"Bearer {ADMIN}"}
    )
    assert response.status_code in (200, 201), response.text
    answer: dict[str, Any] = response.json()
    return answer


def make_keys(gateway: str) -> tuple[str, str, str]:
    """A key with no limits, one of 1 request a minute, one with a spent budget."""
    admin(gateway, "POST", "/tenants", {"id": "load", "name": "load"})
    tiers = ["fast", "deliberate", "cascade"]
    free = admin(gateway, "POST", "/keys", {"tenant": "load", "name": "free", "tiers": tiers})
    limited = admin(
        gateway,
        "POST",
        "/keys",
        {"tenant": "load", "name": "limited", "tiers": tiers, "limits": {"fast": {"rpm": 1}}},
    )
    broke = admin(gateway, "POST", "/keys", {"tenant": "load", "name": "broke", "tiers": tiers})
    admin(gateway, "PUT", f"/keys/{broke['id']}/budgets/daily", {"limit": "0.000001"})
    return free["secret"], limited["secret"], broke["secret"]


def drive(gateway: str, keys: tuple[str, str, str], seconds: float) -> dict[str, int]:
    """Fast and deliberate, chat and completions, streaming and not, and refusals, for `seconds`."""
    free, limited, broke = keys
    deadline = time.monotonic() + seconds
    counts: dict[str, int] = {}
    problems: list[str] = []
    lock = threading.Lock()

    def chat(model: str, stream: bool, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "messages": MESSAGES, "stream": stream, **extra}
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    requests: list[tuple[str, str, Callable[[], dict[str, Any]], int]] = [
        # (name, path, body, expected status)
        ("fast chat", "/v1/chat/completions", lambda: chat("qwen3-8b", False, max_tokens=32), 200),
        ("fast chat stream", "/v1/chat/completions", lambda: chat("llama-3.1-8b", True, max_tokens=32), 200),
        (
            "fast completions",
            "/v1/completions",
            lambda: {"model": "qwen3-8b", "prompt": "Say hi", "max_tokens": 16},
            200,
        ),
        ("deliberate chat", "/v1/chat/completions", lambda: chat("qwen3-8b:deliberate", False), 200),
        (
            "deliberate chat stream",
            "/v1/chat/completions",
            lambda: chat("qwen3-8b:deliberate", True, reasoning_effort="high"),
            200,
        ),
        ("deliberate relay", "/v1/chat/completions", lambda: chat("qwen3-32b", True, max_tokens=64), 200),
        ("cascade chat", "/v1/chat/completions", lambda: chat("qwen3-8b:cascade", False), 200),
    ]

    def worker(name: str, path: str, body: Callable[[], dict[str, Any]], expected: int, key: str) -> None:
        with httpx.Client(base_url=gateway, headers={"authorization": f"Bearer {key}"}, timeout=30) as client:
            while time.monotonic() < deadline:
                try:
                    with client.stream("POST", path, json=body()) as response:
                        response.read()
                        status = response.status_code
                except httpx.HTTPError as exc:
                    with lock:
                        problems.append(f"{name}: {exc!r}")
                    return
                with lock:
                    counts[f"{name} {status}"] = counts.get(f"{name} {status}", 0) + 1
                    if status != expected:
                        problems.append(f"{name}: {status} {response.text[:300]}")
                time.sleep(0.05 if expected == 200 else 0.25)

    refusals = [
        ("rate limited", "/v1/chat/completions", lambda: chat("qwen3-8b", False, max_tokens=8), 429, limited),
        (
            "over budget",
            "/v1/chat/completions",
            lambda: chat("qwen3-8b:deliberate", False, max_tokens=256),
            429,
            broke,
        ),
    ]
    # the limited key's one request a minute goes first, so that everything after it is refused
    first = httpx.post(
        gateway + "/v1/chat/completions",
        json=chat("qwen3-8b", False, max_tokens=8),
        headers={"authorization": f"Bearer {limited}"},
    )
    assert first.status_code == 200, first.text
    threads = [threading.Thread(target=worker, args=(*request, free)) for request in requests]
    threads += [threading.Thread(target=worker, args=refusal) for refusal in refusals]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not problems, "unexpected answers under load:\n" + "\n".join(problems[:20])
    return counts


@pytest.mark.slow
def test_every_panel_query_returns_data_from_a_real_prometheus(prometheus_binary: str) -> None:
    started = time.monotonic()
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tiergate-prometheus-")))
        fast = stack.enter_context(serving(create_simulator_app(FAST)))
        deliberate = stack.enter_context(serving(create_simulator_app(DELIBERATE)))
        settings = gateway_settings(
            [fast],
            [deliberate],
            deliberation=DELIBERATION,
            # threshold 1: every cascade escalates (the escalation ratio's panel has its numerator)
            model_settings={"qwen3-8b": {"cascade": {"threshold": 1.0, "samples": 2}}},
            auth={"mode": "keys", "admin_tokens": [ADMIN]},
            probes={"enabled": True, "tasks": 3, "interval_s": 3600},
        )
        gateway = stack.enter_context(serving(create_app(settings)))
        wait_ready(gateway)
        prometheus = Prometheus(prometheus_binary, folder, gateway, {"fast": fast, "deliberate": deliberate})
        stack.callback(prometheus.stop)
        prometheus.wait_ready()

        counts = drive(gateway, make_keys(gateway), LOAD_SECONDS)
        time.sleep(2.5)  # the last scrapes after the load
        health = prometheus.targets_up()
        assert len(health) == 3 and set(health.values()) == {"up"}, f"{health}\n{prometheus.log()}"

        failures: list[str] = []
        checked = 0
        for name in NAMES:
            dashboard = load(name)
            for where, expr in expressions(dashboard):
                label_values = LABEL_VALUES.match(expr)
                query = substitute(label_values.group(1) if label_values else expr, dashboard)
                reply = prometheus.query(query)
                checked += 1
                if reply.get("status") != "success":
                    failures.append(f"{name} {where}: {reply.get('error')}\n    {query}")
                elif not reply["data"]["result"]:
                    failures.append(f"{name} {where}: no data\n    {query}")
                elif label_values and not any(
                    label_values.group(2) in series["metric"] for series in reply["data"]["result"]
                ):
                    failures.append(f"{name} {where}: no label {label_values.group(2)!r}\n    {query}")
        elapsed = time.monotonic() - started
        assert not failures, (
            f"{len(failures)} of {checked} dashboard queries failed (load: {counts}):\n" + "\n".join(failures)
        )
        assert checked > 50
        print(f"{checked} queries checked against Prometheus after {elapsed:.1f} s; load: {counts}")
