"""Talking to inference engines: one narrow client interface, adapters per engine family, replica
pools, and a vLLM-compatible simulator (`engines.simulator`). Knows nothing of money or tenants."""

from engines._exceptions import (
    EngineError,
    EngineFailed,
    EngineOverloaded,
    EngineRejected,
    EngineTimeout,
    EngineUnavailable,
    LocalOverload,
    NoReplicaAvailable,
)
from engines.client import TEMPLATE_FIELDS, EngineClient, EngineReply, EngineStream, StreamEvent, Timeouts
from engines.engine_stats import EngineStats, parse_vllm_metrics
from engines.http import EngineHTTP
from engines.loop_lag import LoopLag
from engines.openai_compat import OpenAICompatEngine
from engines.pool import EnginePool, PoolPolicy, Replica
from engines.pooled_stream import PooledStream
from engines.routing import HashRing, ReplicaState, RoutingMode, RoutingPolicy, choose, choose_replica
from engines.sse import SSEDecoder
from engines.stats_parsers import parse_metrics
from engines.transport import EngineTransport
from engines.trtllm import TrtllmEngine
from engines.turns import Turns
from engines.usage import StreamTally, Usage, is_usage_chunk

__all__ = [
    "TEMPLATE_FIELDS",
    "EngineClient",
    "EngineError",
    "EngineFailed",
    "EngineHTTP",
    "EngineOverloaded",
    "EnginePool",
    "EngineRejected",
    "EngineReply",
    "EngineStats",
    "EngineStream",
    "EngineTimeout",
    "EngineTransport",
    "EngineUnavailable",
    "HashRing",
    "LocalOverload",
    "LoopLag",
    "NoReplicaAvailable",
    "OpenAICompatEngine",
    "PoolPolicy",
    "PooledStream",
    "Replica",
    "ReplicaState",
    "RoutingMode",
    "RoutingPolicy",
    "SSEDecoder",
    "StreamEvent",
    "StreamTally",
    "Timeouts",
    "TrtllmEngine",
    "Turns",
    "Usage",
    "choose",
    "choose_replica",
    "is_usage_chunk",
    "parse_metrics",
    "parse_vllm_metrics",
]
