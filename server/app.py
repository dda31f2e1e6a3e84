"""The FastAPI app factory: `create_app(settings)` wires settings, database, keys and routers.

Errors always leave as JSON `{"error", "message", ...}`, never as a stack trace. The app refuses to
start on a database whose schema is not at the newest migration (run `pospal-server migrate`), so
instances never migrate on their own. For uvicorn with several workers, `app_from_env` is the factory.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from pospal_protocol.clock import Clock, SystemClock
from server import __version__, fleet
from server.api import (
    activations,
    codes,
    health,
    keys,
    migrations,
    owner_page,
    pause,
    refresh,
    refresh_fast,
    terminals,
    trials,
)
from server.api import billing as billing_api
from server.api import offline as offline_api
from server.api import updates as updates_api
from server.api.deps import Services
from server.billing import make_provider
from server.bodylimit import BodyLimit
from server.config import Settings
from server.db import Database, current_revision, head_revision
from server.errors import ApiError, ConfigError, DatabaseUnavailable
from server.logs import DatabaseOutageLog
from server.ratelimit import RateLimiter, make_rate_limiter
from server.signing import SigningKeys, load_server_secret

log = logging.getLogger("pospal.app")
_OUTAGE_LOG = DatabaseOutageLog(log)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type"}


def check_schema(db: Database) -> None:
    """Raise `ConfigError` unless the database is migrated to this code's newest revision."""
    current, head = current_revision(db), head_revision()
    if current != head:
        raise ConfigError(
            f"database schema is at {current or 'nothing'}, this server needs {head}: "
            "run `pospal-server migrate` (POSPAL_DATABASE_URL names the database)"
        )


def modes(settings: Settings, signing_keys: int) -> dict[str, Any]:
    """The modes a server runs in: what the start-up line says, as fields."""
    billing = settings.billing
    if billing == "stripe":
        billing = f"stripe ({settings.stripe_key_mode()} key)"
    return {
        "environment": settings.environment,
        "billing": billing,
        "email": settings.email,
        "database": "sqlite" if settings.is_sqlite else "postgresql",
        "signing_keys": signing_keys,
        "test_hooks": settings.test_hooks,
    }


def startup_line(settings: Settings, signing_keys: int) -> str:
    """One line with every mode, so an operator sees at once what this server does with money and mail."""
    m = modes(settings, signing_keys)
    return (
        f"pospal-server {__version__} starting: environment={m['environment']} billing={m['billing']} "
        f"email={m['email']} database={m['database']} signing_keys={m['signing_keys']} "
        f"test_hooks={'on' if m['test_hooks'] else 'off'}"
    )


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    db: Database | None = None,
    billing: Any = None,
    mailer: Any = None,
    limiter: RateLimiter | None = None,
    start_worker: bool | None = None,
) -> FastAPI:
    """Build the app. Tests pass a FakeClock, a database, sandbox billing and a console mailer."""
    services = _services(
        settings, clock or SystemClock(), db or Database(settings.database_url), billing, mailer, limiter
    )
    run_worker = settings.outbox_worker if start_worker is None else start_worker
    app = FastAPI(
        title="POSPal license server",
        version=__version__,
        lifespan=_lifespan(services, run_worker),
        responses={422: {"description": "invalid_request"}},
    )
    app.state.services = services
    _install_routers(app)
    _install_error_handlers(app)
    _install_middleware(app, services)
    return app


def _services(
    settings: Settings,
    clock: Clock,
    db: Database,
    billing: Any,
    mailer: Any,
    limiter: RateLimiter | None,
) -> Services:
    """Check the schema, make sure a signing key exists, log the start-up line, and wire the services."""
    check_schema(db)
    signing = SigningKeys(settings.signing_key_dir)
    with db.transaction() as session:
        signing.ensure_current(session, clock.now())
        published = len(signing.published(session, clock.now()))
    fakes = settings.billing == "sandbox" or settings.email == "console" or settings.test_hooks
    # A development server says so loudly, so nobody mistakes its fakes for the real thing.
    log.log(logging.WARNING if fakes else logging.INFO, startup_line(settings, published))
    secret = load_server_secret(
        settings.signing_key_dir, settings.server_secret.reveal() if settings.server_secret else None
    )
    if billing is None:
        billing = make_provider(settings, db, clock)
    services = Services(
        settings=settings,
        db=db,
        clock=clock,
        keys=signing,
        limiter=limiter or make_rate_limiter(settings.redis_url.reveal() if settings.redis_url else None),
        secret=secret,
        billing=billing,
        metrics=health.Metrics(),
    )
    services.extra["mailer"] = mailer
    return services


def _lifespan(services: Services, run_worker: bool) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's lifespan: the outbox worker thread (when wanted) runs while the app serves."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        thread = _start_outbox_worker(services, stop) if run_worker else None
        try:
            yield
        finally:
            stop.set()
            if thread is not None:
                thread.join(timeout=10)

    return lifespan


def _install_routers(app: FastAPI) -> None:
    for module in (
        trials,
        codes,
        activations,
        migrations,
        pause,
        owner_page,
        refresh,
        terminals,
        keys,
        health,
    ):
        app.include_router(module.router)
    app.include_router(billing_api.router)
    app.include_router(offline_api.router)
    updates_api.install(app)  # the signed-update repository, when POSPAL_UPDATE_REPO_DIR is set


def _install_middleware(app: FastAPI, services: Services) -> None:
    # Each added middleware wraps the ones before it: the refresh fast path is innermost, so CORS, the
    # body limit and the metrics still see every refresh it answers.
    refresh_route = next(r for r in refresh.router.routes if getattr(r, "path", None) == "/v1/refresh")
    app.add_middleware(refresh_fast.RefreshFastPath, services=services, route=refresh_route)
    # Outside the fast path, so it sees every answered refresh: the agent version per terminal.
    app.add_middleware(fleet.FleetVersions, db=services.db, clock=services.clock)
    if services.settings.allowed_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(services.settings.allowed_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "Authorization"],
        )
    app.add_middleware(BodyLimit)
    app.add_middleware(_MetricsMiddleware, metrics=services.metrics)


def _start_outbox_worker(services: Services, stop: threading.Event) -> threading.Thread:
    from server.worker import run_worker

    thread = threading.Thread(
        target=run_worker,
        args=(services.settings, stop),
        kwargs={
            "db": services.db,
            "mailer": services.extra.get("mailer"),
            "clock": services.clock,
            "registry": services.metrics.registry,
        },
        name="outbox-worker",
        daemon=True,
    )
    thread.start()
    return thread


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers or None)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in err.get("loc", ())[1:]), "problem": err.get("msg", "")}
            for err in exc.errors()[:20]
        ]
        return JSONResponse(
            {"error": "invalid_request", "message": "The request is not valid.", "problems": problems},
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else "The request was refused."
        return JSONResponse({"error": code, "message": message}, status_code=exc.status_code)

    @app.exception_handler(DataError)
    async def _unstorable(_request: Request, _exc: DataError) -> JSONResponse:
        # A value the database cannot store (too long, bad encoding) is the client's input, not a crash.
        return JSONResponse(refresh.UNSTORABLE, status_code=422)

    @app.exception_handler(OperationalError)
    async def _database_unavailable(request: Request, exc: OperationalError) -> JSONResponse:
        # The database is down or unreachable: a retryable 503 and one log line, not a traceback each.
        _OUTAGE_LOG.failed(request.url.path, exc)
        error = DatabaseUnavailable()
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.error(
            "unhandled_error",
            exc_info=exc,
            extra={"path": request.url.path, "method": request.method},
        )
        return JSONResponse(
            {"error": "internal", "message": "Something went wrong on the server. Try again later."},
            status_code=500,
        )


class _MetricsMiddleware:
    def __init__(self, app: Any, metrics: Any) -> None:
        self.handler = metrics.middleware(app)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        await self.handler(scope, receive, send)


def app_from_env() -> FastAPI:
    """Uvicorn factory (`--factory server.app:app_from_env`): settings from the environment."""
    from server import testhooks
    from server.logs import configure_logging

    settings = Settings.from_env()
    configure_logging(settings.log_level)
    app = create_app(settings, clock=testhooks.clock_for(settings))
    testhooks.install(app, settings)
    return app
