"""server.ratelimit: sliding window in memory and in Redis (shared between instances)."""

from __future__ import annotations

import pytest

from server.errors import RateLimited
from server.ratelimit import MemoryRateLimiter, RedisRateLimiter


@pytest.fixture(params=["memory", "redis"])
def limiter(request):
    if request.param == "memory":
        yield MemoryRateLimiter()
        return
    store = RedisRateLimiter(request.getfixturevalue("redis_url"))
    yield store
    store.close()


def test_limit_then_retry_after_then_window_slides(limiter):
    for second in range(5):
        limiter.hit("codes:a@b.gr", 5, 3600, 1000.0 + second)
    with pytest.raises(RateLimited) as refused:
        limiter.hit("codes:a@b.gr", 5, 3600, 1010.0)
    assert refused.value.extra["retry_after"] == 3590
    assert refused.value.status == 429
    # Refused requests are not counted: once the first one ages out, exactly one more fits.
    limiter.hit("codes:a@b.gr", 5, 3600, 4600.5)
    with pytest.raises(RateLimited):
        limiter.hit("codes:a@b.gr", 5, 3600, 4600.6)


def test_keys_are_independent(limiter):
    limiter.hit("k1", 1, 60, 0.0)
    limiter.hit("k2", 1, 60, 0.0)
    with pytest.raises(RateLimited):
        limiter.hit("k1", 1, 60, 1.0)


def test_redis_limit_is_shared_by_two_instances(redis_url):
    first, second = RedisRateLimiter(redis_url), RedisRateLimiter(redis_url)
    for n in range(3):
        first.hit("codes:owner@cafe.gr", 5, 3600, 100.0 + n)
    for n in range(2):
        second.hit("codes:owner@cafe.gr", 5, 3600, 110.0 + n)
    with pytest.raises(RateLimited):
        second.hit("codes:owner@cafe.gr", 5, 3600, 120.0)
    first.close()
    second.close()


def test_app_uses_redis_when_configured(server_env, redis_url, database, clock, seed_subscription):
    from fastapi.testclient import TestClient

    from server.app import create_app
    from server.config import Settings

    seed_subscription(email="owner@cafe.gr")
    settings = Settings.from_env({**server_env, "POSPAL_REDIS_URL": redis_url})
    apps = [create_app(settings, clock=clock, db=database, start_worker=False) for _ in range(2)]
    with TestClient(apps[0]) as one, TestClient(apps[1]) as two:
        answers = [
            c.post("/v1/codes", json={"email": "owner@cafe.gr", "purpose": "activate"}).status_code
            for c in (one, two, one, two, one, two)
        ]
    assert answers == [202] * 5 + [429]


def test_ipv6_addresses_count_per_64_and_ipv4_per_address():
    from server.ratelimit import ip_bucket

    assert ip_bucket("2001:db8:1:2::1") == ip_bucket("2001:db8:1:2:ffff:1:2:3") == "2001:db8:1:2::/64"
    assert ip_bucket("2001:db8:1:3::1") != ip_bucket("2001:db8:1:2::1")
    assert ip_bucket("::ffff:192.0.2.7") == "192.0.2.7"
    assert ip_bucket("192.0.2.7") != ip_bucket("192.0.2.8")
    assert ip_bucket("testclient") == "testclient"
