"""What the admin and usage routes need of the running gateway, as a protocol: the edge's `GatewayState`
provides it, and this room never imports the edge (tests/test_layering.py)."""

from __future__ import annotations

from typing import Protocol

from starlette.requests import Request

from gateway.accounting.bookkeeper import Bookkeeper
from gateway.budgets import BudgetKeeper
from gateway.inference.admission import Admitter
from gateway.inference.catalog import Catalog
from gateway.keys import Authenticator, KeyStore
from gateway.settings import Settings
from pricing import PriceBook

__all__ = ["Services", "services"]


class Services(Protocol):
    @property
    def settings(self) -> Settings: ...

    @property
    def catalog(self) -> Catalog: ...

    @property
    def admitter(self) -> Admitter: ...

    @property
    def keys(self) -> KeyStore | None: ...

    @property
    def authenticator(self) -> Authenticator | None: ...

    @property
    def budgets(self) -> BudgetKeeper | None: ...

    @property
    def bookkeeper(self) -> Bookkeeper | None: ...

    @property
    def price_book(self) -> PriceBook | None: ...


def services(request: Request) -> Services:
    """The running gateway's services (put in every request's state by the app's lifespan)."""
    found: Services = request.state.gateway
    return found
