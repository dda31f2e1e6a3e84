"""Structured JSON logs: one JSON object per line on stderr, with secrets scrubbed.

Call `configure_logging(level)` once at start-up. Log with `log.info("event_name", extra={...})`;
extra fields become JSON keys. Values whose key looks secret (`code`, `token`, `secret`, `password`,
`signature`, `authorization`, `key`) are replaced with "[redacted]" so no caller can leak one by accident.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

_SECRET_WORDS = ("code", "token", "secret", "password", "signature", "authorization", "api_key", "private")
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def _is_secret(key: str) -> bool:
    key = key.lower()
    return any(word in key for word in _SECRET_WORDS)


def scrub(value: Any, key: str = "") -> Any:
    """Return `value` with secret-looking keys redacted, recursively through dicts and lists."""
    if key and _is_secret(key):
        return "[redacted]"
    if isinstance(value, dict):
        return {k: scrub(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


class JsonFormatter(logging.Formatter):
    """Format a record as one line of JSON: time, level, logger, event, then the extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Render the record; exceptions are reduced to their type, never a traceback with locals."""
        payload: dict[str, Any] = {
            # The log timestamp is the record's own creation time, not a logic decision.
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                payload[key] = scrub(value, key)
        if record.exc_info and record.exc_info[0] is not None:
            payload["exc_type"] = record.exc_info[0].__name__
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, ensure_ascii=False, default=str)


def configure_logging(level: str = "INFO", stream: Any = None) -> None:
    """Send every log record as JSON to `stream` (stderr by default), replacing other handlers."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Per-request access lines are noise at 1,000 req/s; our own request log is off by default too.
    logging.getLogger("uvicorn.access").disabled = True


class DatabaseOutageLog:
    """One warning line per `every_s` while the database is down, not a traceback per request.

    During an outage every request fails the same way; the first failure is logged (with the error's
    first line, never its parameters) and the rest are counted into the next line.
    """

    def __init__(
        self, logger: logging.Logger, every_s: float = 5.0, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.logger = logger
        self.every_s = every_s
        self._monotonic = monotonic
        self._last = float("-inf")
        self._suppressed = 0
        self._lock = threading.Lock()

    def failed(self, path: str, exc: BaseException) -> None:
        """Record one request that failed because the database did not answer."""
        now = self._monotonic()
        with self._lock:
            if now - self._last < self.every_s:
                self._suppressed += 1
                return
            suppressed, self._suppressed, self._last = self._suppressed, 0, now
        # SQLAlchemy puts the statement and its parameters after the first line: leave them out.
        text = str(getattr(exc, "orig", None) or exc)
        reason = text.splitlines()[0][:300] if text else type(exc).__name__
        self.logger.warning(
            "database_unavailable",
            extra={"path": path, "reason": reason, "similar_failures_not_logged": suppressed},
        )
