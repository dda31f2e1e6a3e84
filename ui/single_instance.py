"""One tray per user: a second launch asks the first to show its window, then exits.

The first instance listens on a QLocalServer (a named pipe on Windows, a socket file elsewhere). A later
launch connects, sends ``show`` and gets told to go away. A stale socket file left by a crash is removed
before listening, which is safe because a live owner would have answered the connect.
"""

from __future__ import annotations

import getpass
import hashlib

from PySide6.QtCore import QObject, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket

_CONNECT_MS = 500


def default_name() -> str:
    """A per-user server name, so two users on one PC each get their own tray."""
    try:
        user = getpass.getuser()
    except Exception:  # getuser raises various errors when no login name is known
        user = "user"
    return "pospal-license-agent-" + hashlib.sha256(user.encode()).hexdigest()[:12]


class SingleInstance(QObject):
    """``claim()`` makes this the one instance, or tells the running one to show itself."""

    show_requested = Signal()

    def __init__(self, name: str | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name = name or default_name()
        self.server: QLocalServer | None = None

    def claim(self) -> bool:
        """True when this process is now the instance; False when another one runs (and was asked to show)."""
        if self._ask_running_instance():
            return False
        QLocalServer.removeServer(self.name)
        server = QLocalServer(self)
        server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        if not server.listen(self.name):
            # Lost a race with another launch that started listening first: let it win.
            return not self._ask_running_instance()
        server.newConnection.connect(self._on_connection)
        self.server = server
        return True

    def _ask_running_instance(self) -> bool:
        socket = QLocalSocket()
        socket.connectToServer(self.name)
        if not socket.waitForConnected(_CONNECT_MS):
            return False
        socket.write(b"show\n")
        socket.flush()
        socket.waitForBytesWritten(_CONNECT_MS)
        socket.disconnectFromServer()
        return True

    def _on_connection(self) -> None:
        while self.server is not None and self.server.hasPendingConnections():
            conn = self.server.nextPendingConnection()
            # The message is one short line: wait briefly for it here rather than keeping per-connection
            # state and callbacks alive across the event loop.
            if conn.bytesAvailable() or conn.waitForReadyRead(_CONNECT_MS):
                if b"show" in bytes(conn.readAll().data()):
                    self.show_requested.emit()
            conn.abort()
            conn.deleteLater()

    def release(self) -> None:
        """Stop listening (at quit)."""
        if self.server is not None:
            self.server.close()
            self.server.deleteLater()
            self.server = None
