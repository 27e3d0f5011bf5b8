"""How long `tiergate serve` may take to stop, read from the code, for the deploy files' grace periods."""

from __future__ import annotations

import inspect
import math
import re

import gateway.cli
from pricing import LedgerWriter


def stop_seconds() -> int:
    """The most `tiergate serve` takes to stop after SIGTERM: uvicorn's wait for open requests and streams,
    then the ledger writer's drain of the journal into the database."""
    graceful = re.search(r'"timeout_graceful_shutdown": (\d+)', inspect.getsource(gateway.cli._serve))
    assert graceful, "tiergate serve sets no timeout_graceful_shutdown any more: update the deploy files"
    drain: float = inspect.signature(LedgerWriter).parameters["close_timeout_s"].default
    return int(graceful.group(1)) + math.ceil(drain)
