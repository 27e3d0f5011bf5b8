"""What the console needs of the running gateway, as a protocol: the edge's `GatewayState` provides it, and
this room never imports the edge (tests/test_layering.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry
from starlette.requests import Request

from engines import EnginePool
from gateway.accounting.bookkeeper import Bookkeeper
from gateway.budgets import BudgetKeeper
from gateway.database import Database
from gateway.inference.catalog import Catalog
from gateway.keys import Authenticator, KeyStore
from gateway.limits import RateLimiter
from gateway.settings import Settings
from pricing import PriceBook

if TYPE_CHECKING:
    from gateway.console.console import Console

__all__ = ["ConsoleServices", "console_services"]


class ConsoleServices(Protocol):
    @property
    def settings(self) -> Settings: ...

    @property
    def catalog(self) -> Catalog: ...

    @property
    def keys(self) -> KeyStore | None: ...

    @property
    def authenticator(self) -> Authenticator | None: ...

    @property
    def budgets(self) -> BudgetKeeper | None: ...

    @property
    def bookkeeper(self) -> Bookkeeper | None: ...

    @property
    def database(self) -> Database | None: ...

    @property
    def price_book(self) -> PriceBook | None: ...

    @property
    def limiter(self) -> RateLimiter: ...

    @property
    def pools(self) -> Mapping[str, EnginePool]: ...

    @property
    def registry(self) -> CollectorRegistry: ...

    @property
    def console(self) -> Console | None: ...


def console_services(request: Request) -> ConsoleServices:
    found: ConsoleServices = request.state.gateway
    return found
