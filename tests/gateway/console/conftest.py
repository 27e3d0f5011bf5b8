from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.gateway.console.site import Site, console_site


@pytest.fixture(scope="module")
def site(fast_engine: str, deliberate_engine: str) -> Iterator[Site]:
    with console_site(fast_engine, deliberate_engine) as served:
        yield served
