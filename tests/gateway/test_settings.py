from __future__ import annotations

from pathlib import Path

import pytest

from gateway import ConfigError, Tier, load_settings
from gateway.inference.catalog import Catalog

EXAMPLE = Path(__file__).parents[2] / "config" / "example.yaml"


def test_example_config_is_valid() -> None:
    settings = load_settings(EXAMPLE)
    assert [str(url) for url in settings.pools["fast"].replicas] == [
        "http://127.0.0.1:8101/",
        "http://127.0.0.1:8102/",
    ]
    assert settings.models["qwen3-32b"].resolved_default_tier is Tier.DELIBERATE
    catalog = Catalog(settings.models, settings.tiers.reasoning_effort)
    assert {offer.public_id for offer in catalog.offers} == {
        "qwen3-8b:fast",
        "qwen3-8b:deliberate",
        "qwen3-8b:cascade",
        "qwen3-32b:deliberate",
    }


def test_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERGATE_SERVER__PORT", "9123")
    monkeypatch.setenv("TIERGATE_POOLS__FAST__API_KEY", "s3cret")
    settings = load_settings(EXAMPLE)
    assert settings.server.port == 9123
    assert settings.server.host == "127.0.0.1"  # the rest of the section still comes from the file
    fast = settings.pools["fast"]
    assert fast.api_key is not None and fast.api_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


POOL = "pools: {fast: {replicas: ['http://e:1']}}"
MODEL = "models: {m: {tiers: {fast: {pool: fast}}}}"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (f"pools: {{fast: {{replicas: [not-a-url]}}}}\n{MODEL}", "pools.fast.replicas.0"),
        (f"pools: {{fast: {{replicas: []}}}}\n{MODEL}", "pools.fast.replicas"),
        (f"{POOL}\nmodels: {{m: {{tiers: {{fast: {{pool: gpu}}}}}}}}", "models.m.tiers.fast.pool"),
        (f"{POOL}\nmodels: {{m: {{tiers: {{turbo: {{pool: fast}}}}}}}}", "models.m.tiers.turbo"),
        (
            f"pools: {{fast: {{replicas: ['http://e:1'], timeouts: {{idle_s: -1}}}}}}\n{MODEL}",
            "pools.fast.timeouts.idle_s",
        ),
        (f"pools: {{fast: {{replicas: ['http://e:1'], retries: 3}}}}\n{MODEL}", "pools.fast.retries"),
        (f"{POOL}\nmodels: {{m: {{default_tier: deliberate, tiers: {{fast: {{pool: fast}}}}}}}}", "models.m"),
        (POOL, "models"),
        (f"server: {{port: 99999}}\n{POOL}\n{MODEL}", "server.port"),
    ],
)
def test_bad_configs_name_the_bad_key(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "tiergate.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert f"  - {named}:" in str(caught.value)


def test_unreadable_and_non_mapping_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("pools: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(bad)


@pytest.mark.parametrize(
    ("model", "why"),
    [
        ({"tiers": {"fast": {"pool": "fast"}}, "cascade": {}}, "both a fast and a deliberate tier"),
        (
            {"tiers": {"fast": {"pool": "fast"}, "deliberate": {"pool": "deliberate"}}, "cascade": {}},
            "needs a `deliberation` block",
        ),
        ({"tiers": {"cascade": {"pool": "fast"}}}, "no pool of its own"),
        (
            {
                "tiers": {"fast": {"pool": "fast"}, "deliberate": {"pool": "deliberate", "deliberation": {}}},
                "cascade": {"threshold": 1.5},
            },
            "threshold",
        ),
    ],
)
def test_a_cascade_needs_its_two_stages(model: dict[str, object], why: str) -> None:
    pools = {
        "fast": {"replicas": ["http://127.0.0.1:8101"]},
        "deliberate": {"replicas": ["http://127.0.0.1:8102"]},
    }
    with pytest.raises(ConfigError, match=why):
        load_settings(None, pools=pools, models={"m": model})
