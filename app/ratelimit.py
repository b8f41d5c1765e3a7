"""Token-bucket rate limits: in one replica's memory, or shared by every replica through Redis.

Both implement `take(who, rate) -> seconds to wait (0.0 = go)`. In memory, N replicas give a
key up to N times its rate; with `CACE_RATE_LIMIT_REDIS_URL` set, one bucket per identity
lives in Redis and a Lua script refills and takes from it atomically, using Redis' own
clock, so replicas with skewed clocks still share one budget exactly.

A rate limiter must not take the service down with it: if Redis cannot be reached, requests
are limited by the replica's in-memory buckets (the pre-Redis behaviour, logged once per
outage) and Redis is tried again after a short pause.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Protocol

log = logging.getLogger("cace.ratelimit")


class RateLimiter(Protocol):
    def take(self, who: str, rate: float | None = None) -> float:
        """0.0 when a request may go now, else the seconds until it could."""
        ...


def _burst(burst: int, rate: float) -> int:
    # A bucket must hold at least one second of its rate, or a high per-key rate could never be used.
    return max(burst, math.ceil(rate))


class TokenBuckets:
    """One token bucket per identity in this process: `rate` tokens/s, bursts up to `burst`."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, who: str, rate: float | None = None) -> float:
        rate = self.rate if rate is None else rate
        if rate <= 0:
            return 0.0
        burst = _burst(self.burst, rate)
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(who, (float(burst), now))
            tokens = min(float(burst), tokens + (now - last) * rate)
            if tokens >= 1.0:
                self._buckets[who] = (tokens - 1.0, now)
                return 0.0
            self._buckets[who] = (tokens, now)
            if len(self._buckets) > 100000:  # forget idle identities rather than grow without bound
                self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 60}
            return (1.0 - tokens) / rate


# KEYS[1] bucket hash; ARGV: rate (tokens/s), burst. Returns the wait in microseconds (0 = taken).
# Redis' TIME is the clock, so every replica refills the bucket the same way.
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil then tokens = burst; ts = now end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
return math.ceil(wait * 1000000)
"""


class RedisTokenBuckets:
    """Token buckets shared by every replica through one Redis; see the module docstring."""

    def __init__(self, url: str, rate: float, burst: int, *, prefix: str = "cace:rl:", timeout_s: float = 0.25,
                 retry_after_s: float = 5.0) -> None:  # fmt: skip
        try:
            import redis
        except ImportError as e:  # a setting that cannot work must stop start-up with the fix in the message
            raise RuntimeError(
                "CACE_RATE_LIMIT_REDIS_URL needs the redis client: pip install 'cace-service[redis]'"
            ) from e

        self.rate = rate
        self.burst = max(1, burst)
        self.prefix = prefix
        self.retry_after_s = retry_after_s
        self.client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._script = self.client.register_script(_TAKE)
        self.local = TokenBuckets(rate, burst)  # while Redis is unreachable
        self._down_until = 0.0

    def take(self, who: str, rate: float | None = None) -> float:
        rate = self.rate if rate is None else rate
        if rate <= 0:
            return 0.0
        if time.monotonic() < self._down_until:
            return self.local.take(who, rate)
        try:
            micros = self._script(keys=[self.prefix + who], args=[rate, _burst(self.burst, rate)])
        except Exception as e:  # redis.RedisError, OSError: limit locally rather than fail the request
            if self._down_until == 0.0:
                log.warning("rate-limit store unreachable (%s); limiting per replica for now", e)
            self._down_until = time.monotonic() + self.retry_after_s
            return self.local.take(who, rate)
        if self._down_until:
            log.info("rate-limit store reachable again")
            self._down_until = 0.0
        return int(micros) / 1_000_000

    def health(self) -> tuple[str, str]:
        """(status, detail) for /readyz: whether the buckets are shared right now (one quick ping)."""
        try:
            self.client.ping()
        except Exception as e:  # redis.RedisError, OSError
            return "degraded", f"shared store unreachable ({type(e).__name__}): limiting per replica"
        return "ready", "shared by every replica (Redis)"


def build_rate_limiter(rate: float, burst: int, redis_url: str | None = None) -> RateLimiter:
    return RedisTokenBuckets(redis_url, rate, burst) if redis_url else TokenBuckets(rate, burst)
