"""Liveness and readiness (`/health/live`, `/health/ready`, `/health`) and `GET /metrics` (Prometheus).

    GET /health/live    the process answers: no I/O at all, so a slow database never gets it restarted
    GET /health/ready   ready for traffic: database reachable, schema at this code's migration head,
                        the current signing key loadable, Redis answering when configured; every check
                        listed, 503 when one fails (a load balancer stops sending requests to it)
    GET /health         the first shape, kept for existing callers: a database ping

Metrics are per process: behind several workers or instances, scrape each one (or sum them).
"""

from __future__ import annotations

import time
from functools import cache
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from sqlalchemy import text

from server import __version__
from server.api.deps import Services, services
from server.db import current_revision, head_revision

router = APIRouter(tags=["operations"])


class Metrics:
    """This app's Prometheus metrics, in their own registry (several apps may live in one test process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "pospal_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "pospal_http_request_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )

    def middleware(self, app: Any) -> Any:
        """Wrap an ASGI app so every HTTP request is counted and timed by its route template."""

        async def wrapped(scope: dict, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            started = time.perf_counter()
            status = {"code": 500}

            async def send_wrapper(message: dict) -> None:
                if message["type"] == "http.response.start":
                    status["code"] = message["status"]
                await send(message)

            try:
                await app(scope, receive, send_wrapper)
            finally:
                route = getattr(scope.get("route"), "path", "unmatched")
                self.requests.labels(scope["method"], route, str(status["code"])).inc()
                self.latency.labels(route).observe(time.perf_counter() - started)

        return wrapped


@router.get("/health")
def health(svc: Services = Depends(services)) -> JSONResponse:
    """`{"ok": true, "version": ..., "database": "ok"}`, or 503 when the database does not answer."""
    try:
        with svc.db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception:
        return JSONResponse({"ok": False, "version": __version__, "database": "unavailable"}, status_code=503)
    return JSONResponse({"ok": True, "version": __version__, "database": "ok"})


@router.get("/health/live")
async def live() -> dict[str, Any]:
    """`{"ok": true, "version": ...}` while the process serves requests (no database, no Redis)."""
    return {"ok": True, "version": __version__}


@router.get("/health/ready")
def ready(svc: Services = Depends(services)) -> JSONResponse:
    """`{"ok", "version", "checks": [{"name", "ok", "detail"}]}`; 503 when any check fails."""
    checks = readiness_checks(svc)
    ok = all(check["ok"] for check in checks)
    return JSONResponse({"ok": ok, "version": __version__, "checks": checks}, status_code=200 if ok else 503)


def readiness_checks(svc: Services) -> list[dict[str, Any]]:
    """Database, schema head, signing key, and Redis when configured, in that order.

    Details name what failed (an exception's class, a revision) and never a URL or a secret.
    """
    checks = []
    try:
        with svc.db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        checks.append(_check("database", True, "reachable"))
        database_up = True
    except Exception as exc:
        checks.append(_check("database", False, f"unreachable ({type(exc).__name__})"))
        database_up = False
    checks.append(_schema_check(svc) if database_up else _check("schema", False, "database unreachable"))
    checks.append(_keys_check(svc) if database_up else _check("signing_keys", False, "database unreachable"))
    if svc.settings.redis_url:
        checks.append(_redis_check(svc))
    return checks


def _check(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "ok": ok, "detail": detail}


@cache
def _head() -> str | None:
    """This code's migration head (read from the shipped scripts once per process)."""
    return head_revision()


def _schema_check(svc: Services) -> dict[str, Any]:
    try:
        current = current_revision(svc.db)
    except Exception as exc:
        return _check("schema", False, f"revision unreadable ({type(exc).__name__})")
    head = _head()
    if current != head:
        return _check("schema", False, f"at {current or 'nothing'}, this server needs {head}: run migrate")
    return _check("schema", True, f"at head {head}")


def _keys_check(svc: Services) -> dict[str, Any]:
    try:
        with svc.db.read() as connection:
            kid = svc.keys.current_kid(connection)
    except Exception as exc:
        return _check("signing_keys", False, f"no current key ({type(exc).__name__})")
    if not svc.keys.has_private_key(kid):
        return _check("signing_keys", False, f"the private key of {kid} is not in the key directory")
    return _check("signing_keys", True, f"current key {kid} loaded")


def _redis_check(svc: Services) -> dict[str, Any]:
    import redis

    client = svc.extra.get("health_redis")
    if client is None:
        url = svc.settings.redis_url.reveal() if svc.settings.redis_url else ""
        client = svc.extra["health_redis"] = redis.Redis.from_url(
            url, socket_timeout=2, socket_connect_timeout=2
        )
    try:
        client.ping()
    except Exception as exc:
        return _check("redis", False, f"unreachable ({type(exc).__name__})")
    return _check("redis", True, "reachable")


@router.get("/metrics")
def metrics(svc: Services = Depends(services)) -> Response:
    """Prometheus metrics of this process."""
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)
