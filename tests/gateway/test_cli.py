"""The `tiergate` command as a user runs it: real processes, real ports."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import StartGateway, unused_url
from tests.processes import TIERGATE, free_port, read_until, start, wait_http
from tests.tables import read_table


def test_demo_serves_both_tiers_and_stops_on_ctrl_c(processes: list[subprocess.Popen[str]]) -> None:
    port = free_port()
    demo = start(processes, "demo", "--port", str(port))
    read_until(demo, r"open-file limit")  # raised to the hard limit, and said once, before anything else
    api_key = read_until(demo, r'api_key="(tg-[^"]+)"').group(1)
    admin_token = read_until(demo, r"/admin/keys -H 'authorization: Bearer ([^']+)'").group(1)
    wait_http(f"http://127.0.0.1:{port}/readyz", demo)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=api_key, max_retries=0)
    assert sorted(model.id for model in client.models.list()) == [
        "llama-3.1-8b:fast",
        "qwen3-32b:deliberate",
        "qwen3-8b:auto",
        "qwen3-8b:cascade",
        "qwen3-8b:deliberate",
        "qwen3-8b:fast",
    ]
    # the deliberate tier's bound holds the low effort's floor (256) and an answer (so does the cascade's)
    for model, bound in (("qwen3-8b:fast", 5), ("qwen3-8b:deliberate", 400), ("qwen3-8b:cascade", 400)):
        reply = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=bound,
            reasoning_effort="low",
        )
        message = reply.choices[0].message
        assert message.content or (message.model_extra or {}).get("reasoning")  # 5 tokens may all be thinking
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="tg-nope-nope", max_retries=0
        ).models.list()
    keys = httpx.get(
        f"http://127.0.0.1:{port}/admin/keys", headers={"authorization": f"Bearer {admin_token}"}
    )
    assert keys.status_code == 200 and keys.json()["data"][0]["tenant"] == "demo"
    assert api_key not in keys.text  # secrets are never listed
    demo.send_signal(signal.SIGINT)
    output, _ = demo.communicate(timeout=15)
    assert demo.returncode == 0
    assert "Traceback" not in output
    assert api_key not in output  # printed once, in the banner read above, never logged


def test_serve_with_workers_in_front_of_simulate(
    processes: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    engine_port, gateway_port = free_port(), free_port()
    engine = start(
        processes, "simulate", "--port", str(engine_port), "--profile", "deliberate", "--zero-latency"
    )
    wait_http(f"http://127.0.0.1:{engine_port}/health", engine)
    config = tmp_path / "tiergate.yaml"
    config.write_text(
        f"server: {{port: {gateway_port}, workers: 2}}\nauth: {{mode: disabled}}\n"
        f"pools: {{deliberate: {{replicas: ['http://127.0.0.1:{engine_port}'],"
        " health: {interval_s: 0.2}}}\n"
        "models: {qwen3-32b: {tiers: {deliberate: {pool: deliberate}}}}\n"
    )
    gateway = start(processes, "serve", "--config", str(config))
    wait_http(f"http://127.0.0.1:{gateway_port}/readyz", gateway)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{gateway_port}/v1", api_key="k", max_retries=0)
    for _ in range(8):
        reply = client.chat.completions.create(
            model="qwen3-32b", messages=[{"role": "user", "content": "hi"}]
        )
        assert (reply.choices[0].message.model_extra or {}).get("reasoning")
    # /metrics adds up every worker's requests, whichever worker answers the scrape
    for _ in range(3):
        text = httpx.get(f"http://127.0.0.1:{gateway_port}/metrics").text
        served = [
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "tiergate_requests_total" and sample.labels["outcome"] == "ok"
        ]
        assert sum(served) == 8
    gateway.send_signal(signal.SIGTERM)
    gateway.wait(timeout=15)
    assert gateway.stdout is not None
    output = gateway.stdout.read()
    # each worker logs as the parent does: one line per request, written by its log thread before it exits
    logged = [line for line in output.splitlines() if " INFO tiergate.requests: " in line]
    ids = {json.loads(line.split(" tiergate.requests: ", 1)[1])["request_id"] for line in logged}
    assert len(logged) == len(ids) == 8


def test_serve_raises_its_open_file_limit_to_the_hard_one(
    processes: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard open-file limit here ({hard}) leaves nothing to raise")
    port = free_port()
    config = tmp_path / "tiergate.yaml"
    config.write_text(
        f"server: {{port: {port}}}\nauth: {{mode: disabled}}\n"
        f"pools: {{fast: {{replicas: ['{unused_url()}']}}}}\n"
        "models: {m: {tiers: {fast: {pool: fast}}}}\n"
    )
    gateway = subprocess.Popen(
        [*TIERGATE, "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)),  # a low soft limit
    )
    processes.append(gateway)
    raised = read_until(gateway, r"open-file limit raised from (\d+) to (\d+)")
    assert raised.groups() == ("256", str(hard))
    wait_http(f"http://127.0.0.1:{port}/healthz", gateway)
    limits = Path(f"/proc/{gateway.pid}/limits").read_text()
    soft_now, hard_now = re.search(r"Max open files\s+(\S+)\s+(\S+)", limits).groups()  # type: ignore[union-attr]
    assert soft_now == hard_now == str(hard)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve"], "give --config FILE"),
        (["serve", "--config", "/nonexistent/tiergate.yaml"], "cannot read config file"),
        (["simulate", "--profile", "quantum"], "quantum"),
    ],
)
def test_bad_invocations_fail_clearly(args: list[str], message: str) -> None:
    result = subprocess.run([*TIERGATE, *args], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_names_the_bad_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "pools: {fast: {replicas: ['http://e:1']}}\nmodels: {m: {tiers: {fast: {pool: gpu}}}}\n"
    )
    result = subprocess.run(
        [*TIERGATE, "serve", "--config", str(config)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    assert "models.m.tiers.fast.pool: no pool named 'gpu'" in result.stderr


def test_keys_and_tenants_commands_on_the_database(tmp_path: Path) -> None:
    config = tmp_path / "tiergate.yaml"
    config.write_text(
        "pools: {fast: {replicas: ['http://127.0.0.1:9']}}\n"
        "models: {m: {tiers: {fast: {pool: fast}}}}\n"
        f"database: {{url: 'sqlite:///{tmp_path / 'k.sqlite3'}'}}\n"
    )

    def tiergate(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*TIERGATE, *args, "--config", str(config)], capture_output=True, text=True, timeout=60
        )

    assert tiergate("tenants", "create", "acme", "--name", "Acme").returncode == 0
    assert "exists already" in tiergate("tenants", "create", "acme").stderr
    created = tiergate("keys", "create", "--tenant", "acme", "--tiers", "fast", "--rpm", "60")
    assert created.returncode == 0
    secret = re.search(r"(tg-\S+)", created.stdout)
    assert secret is not None
    key_id = secret.group(1).split("-")[1]
    assert tiergate("keys", "limits", key_id, "--tiers", "fast", "--tpm", "5000").returncode == 0
    listed = tiergate("keys", "list")
    (key,) = read_table(listed.stdout)  # a table with its header, plain: stdout is a pipe here
    assert (key["id"], key["tenant"], key["state"]) == (key_id, "acme", "active")
    assert key["limits"] == "fast:rpm=-,tpm=5000"
    assert secret.group(1) not in listed.stdout and "\x1b" not in listed.stdout
    assert tiergate("keys", "revoke", key_id).returncode == 0
    assert read_table(tiergate("keys", "list", "--tenant", "acme").stdout)[0]["state"] == "REVOKED"
    (tenant,) = read_table(tiergate("tenants", "list").stdout)
    assert (tenant["id"], tenant["name"]) == ("acme", "Acme")
    (listed_json,) = json.loads(tiergate("keys", "list", "--json").stdout)
    assert listed_json["id"] == key_id and listed_json["revoked"] is True
    refused = tiergate("keys", "create", "--tenant", "ghost")
    assert refused.returncode != 0 and "no tenant 'ghost'" in refused.stderr
    unknown_model = tiergate("keys", "create", "--tenant", "acme", "--models", "gpt-9")
    assert "unknown models: gpt-9" in unknown_model.stderr


def test_serve_refuses_a_price_book_with_a_gap(tmp_path: Path) -> None:
    book = tmp_path / "prices.yaml"
    book.write_text(
        "currency: USD\nversions:\n  - effective_from: 2026-01-01\n    prices:\n"
        "      fast: {m: {input: '0.1', output: '0.2'}}\n"
    )
    config = tmp_path / "tiergate.yaml"
    config.write_text(
        "pools: {fast: {replicas: ['http://127.0.0.1:9']}}\n"
        "models: {m: {tiers: {fast: {pool: fast}, deliberate: {pool: fast}}}}\n"
        f"pricing: {{book: '{book}'}}\nauth: {{mode: disabled}}\n"
    )
    result = subprocess.run(
        [*TIERGATE, "serve", "--config", str(config)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    assert (
        "pricing.book" in result.stderr and "deliberate" in result.stderr and "Traceback" not in result.stderr
    )


def test_bill_invoice_and_export_from_the_ledger(tmp_path: Path) -> None:
    import asyncio
    import csv
    from datetime import UTC, datetime

    from gateway.accounting.bookkeeper import ledger_migrations
    from gateway.database import open_database
    from pricing import Ledger, load_price_book
    from tests.pricing.factories import make_row

    book_path = Path(__file__).parents[2] / "gateway" / "prices.yaml"
    database_url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    book = load_price_book(book_path)
    november = datetime(2026, 11, 5, tzinfo=UTC)
    rows = [
        make_row(book, tenant="acme", started_at=november, prompt_tokens=1000 * i, completion_tokens=300 * i)
        for i in range(1, 4)
    ]
    rows.append(make_row(book, tenant="globex", started_at=november, prompt_tokens=500, completion_tokens=50))

    async def fill() -> None:
        database = await open_database(database_url)
        await database.migrate("ledger", ledger_migrations())
        assert await Ledger(database).add(rows) == 4
        await database.aclose()

    asyncio.run(fill())
    config = tmp_path / "tiergate.yaml"
    config.write_text(
        "pools: {fast: {replicas: ['http://127.0.0.1:9']}}\n"
        "models: {qwen3-8b: {tiers: {fast: {pool: fast}, deliberate: {pool: fast}}}}\n"
        f"pricing: {{book: '{book_path}'}}\ndatabase: {{url: '{database_url}'}}\n"
    )
    acme_total = sum(row.charge.total for row in rows if row.record.tenant == "acme")
    invoice = subprocess.run(
        [
            *TIERGATE,
            "bill",
            "invoice",
            "--tenant",
            "acme",
            "--period",
            "2026-11",
            "--config",
            str(config),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert invoice.returncode == 0, invoice.stderr
    assert json.loads(invoice.stdout)["total_micros"] == acme_total
    out = tmp_path / "export.csv"
    export = subprocess.run(
        [
            *TIERGATE,
            "bill",
            "export",
            "--format",
            "csv",
            "--period",
            "2026-11",
            "--config",
            str(config),
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert export.returncode == 0, export.stderr
    with out.open() as handle:
        exported = list(csv.DictReader(handle))
    assert {line["request_id"] for line in exported} == {row.record.request_id for row in rows}
    empty = subprocess.run(
        [
            *TIERGATE,
            "bill",
            "invoice",
            "--tenant",
            "acme",
            "--period",
            "2020-01",
            "--config",
            str(config),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(empty.stdout)["total_micros"] == 0


def test_budgets_commands_on_the_database_and_through_the_admin_api(
    tmp_path: Path, start_gateway: StartGateway, fast_engine: str
) -> None:
    import asyncio
    from datetime import UTC, datetime

    from gateway.accounting.bookkeeper import ledger_migrations
    from gateway.database import open_database
    from pricing import Ledger, format_micros, load_price_book
    from tests.pricing.factories import make_row

    book_path = Path(__file__).parents[2] / "gateway" / "prices.yaml"
    database_url = f"sqlite:///{tmp_path / 'tiergate.sqlite3'}"
    config = tmp_path / "tiergate.yaml"
    config.write_text(
        "pools: {fast: {replicas: ['http://127.0.0.1:9']}}\n"
        "models: {qwen3-8b: {tiers: {fast: {pool: fast}, deliberate: {pool: fast}}}}\n"
        f"pricing: {{book: '{book_path}'}}\ndatabase: {{url: '{database_url}'}}\n"
    )

    def tiergate(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*TIERGATE, *args, "--config", str(config)], capture_output=True, text=True, timeout=60
        )

    assert tiergate("tenants", "create", "acme").returncode == 0
    created = tiergate("keys", "create", "--tenant", "acme", "--json")
    key_id = json.loads(created.stdout)["id"]
    row = make_row(
        load_price_book(book_path),
        tenant="acme",
        key_id=key_id,
        started_at=datetime.now(UTC),
        prompt_tokens=100_000,
    )

    async def spend() -> None:
        database = await open_database(database_url)
        await database.migrate("ledger", ledger_migrations())
        assert await Ledger(database).add([row]) == 1
        await database.aclose()

    asyncio.run(spend())
    done = tiergate("budgets", "set", "--tenant", "acme", "--period", "monthly", "--limit", "25.50")
    assert done.returncode == 0, done.stderr
    (budget,) = read_table(done.stdout)
    assert (budget["limit"], budget["currency"]) == ("25.500000", "USD")
    assert budget["spent"] == format_micros(row.charge.total)
    assert tiergate("budgets", "set", "--key", key_id, "--period", "daily", "--limit", "2").returncode == 0
    listed = json.loads(tiergate("budgets", "list", "--tenant", "acme", "--json").stdout)
    assert [(b["scope"], b["period"], b["limit_micros"]) for b in listed] == [
        ("tenant", "monthly", 25_500_000),
        ("key", "daily", 2_000_000),
    ]
    assert all(b["spent_micros"] == row.charge.total for b in listed)
    float_refused = tiergate("budgets", "set", "--tenant", "acme", "--period", "daily", "--limit", "1e-9")
    assert float_refused.returncode != 0 and "more precise than one micro" in float_refused.stderr
    ghost = tiergate("budgets", "set", "--tenant", "ghost", "--period", "daily", "--limit", "1")
    assert ghost.returncode != 0 and "no tenant 'ghost'" in ghost.stderr
    assert "deleted" in tiergate("budgets", "delete", "--key", key_id, "--period", "daily").stdout

    # the same through a running gateway's admin API
    gateway = start_gateway(
        [fast_engine],
        [fast_engine],
        auth={"mode": "keys", "admin_tokens": ["admin-token-0123456789abcdef"]},
        database={"url": database_url},
        pricing={"book": str(book_path)},
    )
    remote = subprocess.run(
        [*TIERGATE, "budgets", "list", "--tenant", "acme", "--url", gateway.url, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TIERGATE_ADMIN_TOKEN": "admin-token-0123456789abcdef"},
    )
    assert remote.returncode == 0, remote.stderr
    (monthly,) = json.loads(remote.stdout)
    assert (monthly["limit"], monthly["spent_micros"]) == ("25.500000", row.charge.total)


def test_tenants_classes_and_keys_caps_from_the_command_line(
    tmp_path: Path, start_gateway: StartGateway, fast_engine: str
) -> None:
    database_url = f"sqlite:///{tmp_path / 'k.sqlite3'}"
    config = tmp_path / "tiergate.yaml"
    config.write_text(
        "pools: {fast: {replicas: ['http://127.0.0.1:9']}}\n"
        "models: {m: {tiers: {fast: {pool: fast}}}}\n"
        f"database: {{url: '{database_url}'}}\n"
    )

    def tiergate(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*TIERGATE, *args, "--config", str(config)], capture_output=True, text=True, timeout=60
        )

    assert tiergate("tenants", "create", "gold", "--class", "premium").returncode == 0
    assert tiergate("tenants", "create", "acme").returncode == 0
    created = tiergate(
        "keys", "create", "--tenant", "acme", "--tiers", "fast", "--rpm", "60", "--max-concurrent", "2"
    )
    assert created.returncode == 0, created.stderr
    key_id = re.search(r"created key (\S+)", created.stdout).group(1)  # type: ignore[union-attr]
    assert read_table(tiergate("keys", "list").stdout)[0]["limits"] == "fast:rpm=60,tpm=- concurrent=2"
    changed = tiergate("tenants", "set", "acme", "--class", "premium", "--json")
    assert changed.returncode == 0 and json.loads(changed.stdout)["priority_class"] == "premium"
    assert {row["id"]: row["class"] for row in read_table(tiergate("tenants", "list").stdout)} == {
        "acme": "premium",
        "gold": "premium",
    }
    # a cap alone leaves the rate limits; 0 lifts it
    (key,) = json.loads(tiergate("keys", "list", "--json").stdout)
    assert (key["priority_class"], key["max_concurrent"]) == ("premium", 2)
    lifted = json.loads(tiergate("keys", "limits", key_id, "--max-concurrent", "0", "--json").stdout)
    assert lifted["max_concurrent"] is None and lifted["limits"] == {"fast": {"rpm": 60, "tpm": None}}
    refused = tiergate("tenants", "set", "acme", "--class", "gold")
    assert refused.returncode != 0 and "invalid choice" in refused.stderr

    # the same through a running gateway's admin API
    gateway = start_gateway(
        [fast_engine],
        [fast_engine],
        auth={"mode": "keys", "admin_tokens": ["admin-token-0123456789abcdef"]},
        database={"url": database_url},
    )
    remote = subprocess.run(
        [*TIERGATE, "tenants", "set", "acme", "--class", "standard", "--url", gateway.url, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TIERGATE_ADMIN_TOKEN": "admin-token-0123456789abcdef"},
    )
    assert remote.returncode == 0, remote.stderr
    assert json.loads(remote.stdout)["priority_class"] == "standard"
    assert json.loads(tiergate("keys", "list", "--json").stdout)[0]["priority_class"] == "standard"
