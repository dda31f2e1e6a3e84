"""`GET /health` (liveness plus a database ping) and `GET /metrics` (Prometheus text format).

Metrics are per process: behind several workers or instances, scrape each one (or sum them).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from sqlalchemy import text

from server import __version__
from server.api.deps import Services, services

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


@router.get("/metrics")
def metrics(svc: Services = Depends(services)) -> Response:
    """Prometheus metrics of this process."""
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)
