"""Launch profiles: how to start an engine for a tier, as data (argv, and for TensorRT-LLM the YAML of its
`--config`), rendered for a model. `tiergate engines` prints them."""

from engines.profiles.catalog import PROFILES, get_profile
from engines.profiles.profile import LaunchPlan, LaunchProfile, ProfileError, reasoning_parser

__all__ = ["PROFILES", "LaunchPlan", "LaunchProfile", "ProfileError", "get_profile", "reasoning_parser"]
