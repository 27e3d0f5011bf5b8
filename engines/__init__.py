"""Talking to inference engines: one narrow client interface, adapters per engine family, replica
pools, and a vLLM-compatible simulator (`engines.simulator`). Knows nothing of money or tenants."""

from engines._exceptions import (
    EngineError,
    EngineFailed,
    EngineOverloaded,
    EngineRejected,
    EngineTimeout,
    EngineUnavailable,
    NoReplicaAvailable,
)
from engines.client import EngineClient, EngineReply, EngineStream, StreamEvent, Timeouts
from engines.http import EngineHTTP
from engines.openai_compat import OpenAICompatEngine
from engines.pool import EnginePool, PooledStream, PoolPolicy, Replica
from engines.routing import ReplicaState, choose_replica
from engines.sse import SSEDecoder
from engines.transport import EngineTransport
from engines.usage import StreamTally, Usage

__all__ = [
    "EngineClient",
    "EngineError",
    "EngineFailed",
    "EngineHTTP",
    "EngineOverloaded",
    "EnginePool",
    "EngineRejected",
    "EngineReply",
    "EngineStream",
    "EngineTimeout",
    "EngineTransport",
    "EngineUnavailable",
    "NoReplicaAvailable",
    "OpenAICompatEngine",
    "PoolPolicy",
    "PooledStream",
    "Replica",
    "ReplicaState",
    "SSEDecoder",
    "StreamEvent",
    "StreamTally",
    "Timeouts",
    "Usage",
    "choose_replica",
]
