from __future__ import annotations

from pathlib import Path

import pytest

from gateway import ConfigError, Tier, load_settings
from gateway.inference.catalog import Catalog
from gateway.tiers import ReasoningEffort

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


def test_included_files_merge_over_the_config_in_order(tmp_path: Path) -> None:
    (tmp_path / "tiergate.yaml").write_text(
        f"include: [extra/one.yaml, two.yaml]\n{POOL}\nserver: {{port: 9000, host: 0.0.0.0}}\n"
        "models: {m: {tiers: {fast: {pool: fast}}, max_model_len: 4096}}\n"
    )
    (tmp_path / "extra").mkdir()
    # paths are the including file's; mappings merge key by key, the later file winning
    (tmp_path / "extra" / "one.yaml").write_text("server: {port: 9001}\nmodels: {m: {owned_by: one}}\n")
    (tmp_path / "two.yaml").write_text("models: {m: {owned_by: two, max_output_tokens: 100}}\n")
    settings = load_settings(tmp_path / "tiergate.yaml")
    assert (settings.server.port, settings.server.host) == (9001, "0.0.0.0")
    model = settings.models["m"]
    assert (model.owned_by, model.max_output_tokens, model.max_model_len) == ("two", 100, 4096)
    assert Tier.FAST in model.tiers


@pytest.mark.parametrize(
    ("include", "message"),
    [
        ("include: 3", "a path or a list of paths"),
        ("include: missing.yaml", "cannot read"),
        ("include: nested.yaml", "an included file cannot include"),
        ("include: bad.yaml", "unknown key"),
    ],
)
def test_a_bad_include_is_named(tmp_path: Path, include: str, message: str) -> None:
    (tmp_path / "nested.yaml").write_text("include: other.yaml\n")
    (tmp_path / "bad.yaml").write_text("models: {m: {colour: blue}}\n")
    (tmp_path / "tiergate.yaml").write_text(f"{include}\n{POOL}\n{MODEL}\n")
    with pytest.raises(ConfigError, match=message):
        load_settings(tmp_path / "tiergate.yaml")


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


def test_an_include_tunes_only_effort_levels_the_config_defines(tmp_path: Path) -> None:
    tuned = "models: {m: {tiers: {deliberate: {deliberation: {efforts: {high: {stop_confidence: 0.6}}}}}}}\n"
    (tmp_path / "tuned.yaml").write_text(tuned)
    deliberate = "deliberate: {pool: fast, deliberation: {efforts: {%s}}}"
    config = tmp_path / "tiergate.yaml"
    # the config leaves its levels to the defaults: merged, the high level would stand alone at floor 0
    config.write_text(f"include: tuned.yaml\n{POOL}\nmodels: {{m: {{tiers: {{{deliberate % ''}}}}}}}\n")
    with pytest.raises(ConfigError, match=r"models\.m\.tiers\.deliberate\.deliberation\.efforts\.high"):
        load_settings(config)
    # defined in the config: the include tunes its vote, the level's promise and the other levels stay
    levels = "high: {floor: 1024, cap: 4096, samples: 5}, low: {floor: 64}"
    config.write_text(f"include: tuned.yaml\n{POOL}\nmodels: {{m: {{tiers: {{{deliberate % levels}}}}}}}\n")
    offer = load_settings(config).models["m"].tiers[Tier.DELIBERATE]
    assert offer.deliberation is not None
    high = offer.deliberation.efforts[ReasoningEffort.HIGH]
    assert (high.floor, high.samples, high.stop_confidence) == (1024, 5, 0.6)
    assert offer.deliberation.efforts[ReasoningEffort.LOW].floor == 64
