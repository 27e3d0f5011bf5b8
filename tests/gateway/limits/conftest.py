"""Redis for the limiter tests (see redis_server.py)."""

from tests.gateway.limits.redis_server import redis_prefix, redis_url

__all__ = ["redis_prefix", "redis_url"]
