"""The gateway: HTTP surface, tiers, metering seams. The only package importing engines and pricing."""

from gateway.accounting.exchange import Exchange, MeterSink, Outcome
from gateway.app import app_from_environment, create_app
from gateway.http.errors import GatewayError
from gateway.inference.catalog import Catalog, Offer
from gateway.settings import ConfigError, Settings, load_settings
from gateway.tiers import ReasoningEffort, Tier

__all__ = [
    "Catalog",
    "ConfigError",
    "Exchange",
    "GatewayError",
    "MeterSink",
    "Offer",
    "Outcome",
    "ReasoningEffort",
    "Settings",
    "Tier",
    "app_from_environment",
    "create_app",
    "load_settings",
]
