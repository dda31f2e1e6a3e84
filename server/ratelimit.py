"""Sliding-window rate limits: in memory for one process, Redis when `POSPAL_REDIS_URL` is set.

`limiter.hit(key, limit, window_s, now)` records one request for `key` and raises `RateLimited` (with
`retry_after` in seconds) when it would be the `limit + 1`-th within the last `window_s` seconds.
Refused requests are not recorded, so a client that waits as told gets through.

Several instances must share Redis: the in-memory store only limits within one process.

Per-address limits key on `ip_bucket(address)`: the address itself for IPv4, its /64 for IPv6, since one
customer line gets a whole /64 and can pick any address in it.
"""

from __future__ import annotations

import ipaddress
import math
import secrets
import threading
from collections import deque
from typing import Protocol

from server.errors import RateLimited

_MAX_MEMORY_KEYS = 100_000


def ip_bucket(address: str) -> str:
    """The key a per-address limit counts under: an IPv4 address, or the /64 network of an IPv6 one."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)


class RateLimiter(Protocol):
    """A store of recent requests per key."""

    def hit(self, key: str, limit: int, window_s: float, now: float) -> None:
        """Record a request for `key` at `now` (Unix seconds) or raise `RateLimited`."""
        ...


class MemoryRateLimiter:
    """A per-process sliding log of request times per key, bounded in keys."""

    def __init__(self) -> None:
        self._log: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str, limit: int, window_s: float, now: float) -> None:
        """Record a request or raise `RateLimited`."""
        with self._lock:
            times = self._log.get(key)
            if times is None:
                if len(self._log) >= _MAX_MEMORY_KEYS:
                    self._evict(now, window_s)
                times = self._log[key] = deque()
            while times and times[0] <= now - window_s:
                times.popleft()
            if len(times) >= limit:
                raise RateLimited(retry_after=max(1, math.ceil(times[0] + window_s - now)))
            times.append(now)

    def _evict(self, now: float, window_s: float) -> None:
        stale = [k for k, t in self._log.items() if not t or t[-1] <= now - window_s]
        for key in stale or list(self._log)[: len(self._log) // 2]:
            del self._log[key]


# KEYS[1] = key; ARGV = now, window, limit, member. Returns {allowed, oldest_score}.
_SLIDING_WINDOW_LUA = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
if redis.call('ZCARD', key) >= limit then
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return {0, oldest[2]}
end
redis.call('ZADD', key, now, ARGV[4])
redis.call('PEXPIRE', key, math.ceil(window * 1000))
return {1, '0'}
"""


class RedisRateLimiter:
    """The same sliding log in a Redis sorted set, updated atomically by one Lua script."""

    def __init__(self, url: str, prefix: str = "pospal:rl:") -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._script = self._redis.register_script(_SLIDING_WINDOW_LUA)
        self._prefix = prefix

    def hit(self, key: str, limit: int, window_s: float, now: float) -> None:
        """Record a request or raise `RateLimited`."""
        member = f"{now:.6f}:{secrets.token_hex(4)}"
        allowed, oldest = self._script(keys=[self._prefix + key], args=[now, window_s, limit, member])
        if not int(allowed):
            raise RateLimited(retry_after=max(1, math.ceil(float(oldest) + window_s - now)))

    def close(self) -> None:
        """Close the connection pool."""
        self._redis.close()


def make_rate_limiter(redis_url: str | None) -> RateLimiter:
    """Redis when a URL is configured, else in memory."""
    return RedisRateLimiter(redis_url) if redis_url else MemoryRateLimiter()
