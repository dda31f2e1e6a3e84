"""`ConsoleMailer`: development delivery that prints messages, or appends them to a file.

With a path, each message is one JSON line (to, subject, text, idempotency key), which is what the demo
and end-to-end tests read to find a login code. Lines are written with one `write` call on a file
opened in append mode, so concurrent workers never interleave a message.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import TextIO

from server.mail.base import OutgoingEmail


class ConsoleMailer:
    """Print messages to a stream (stdout by default) or append them to a JSON-lines file."""

    def __init__(self, path: str | os.PathLike[str] | None = None, stream: TextIO | None = None) -> None:
        self.path = Path(path) if path else None
        self.stream = stream
        self._lock = threading.Lock()

    def send(self, message: OutgoingEmail) -> None:
        """Record the message; never fails except on a full disk."""
        if self.path is not None:
            line = json.dumps(
                {
                    "to": message.to_email,
                    "subject": message.subject,
                    "text": message.text,
                    "idempotency_key": message.idempotency_key,
                },
                ensure_ascii=False,
            )
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._lock, open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
            return
        stream = self.stream or sys.stdout
        with self._lock:
            stream.write(
                f"--- email to {message.to_email} ---\nSubject: {message.subject}\n\n{message.text}\n---\n"
            )
            stream.flush()
