"""The channel on Windows: a named pipe the service creates, whose clients it identifies by impersonation.

**Server** (`PipeChannel`, in the service: `NT SERVICE\\POSPalAgent`). `PIPE_NAME` is created with
FILE_FLAG_FIRST_PIPE_INSTANCE (if another process already holds the name, creating it fails and the
service says so, instead of sharing a name with an impostor), PIPE_REJECT_REMOTE_CLIENTS, and a DACL
(`pipe_dacl`): SYSTEM and the service full control, interactive users read and write data only. Not
FILE_CREATE_PIPE_INSTANCE (= FILE_APPEND_DATA, part of GENERIC_WRITE), so no user can add an instance of
the service's pipe and answer some of its clients. After the client's first frame the server calls
ImpersonateNamedPipeClient, reads the impersonation token's user SID and session id (TokenSessionId),
and reverts: that is the `Caller` credentials are bound to (`agent.link.channel`).

**Client** (`connect`, in each session's tray). The pipe is opened with SECURITY_SQOS_PRESENT |
SECURITY_IDENTIFICATION, so the server may identify the tray but never act as it, and only with
GENERIC_READ | FILE_WRITE_DATA. Before a byte is written the tray reads the pipe object's owner SID from
its own handle (GetSecurityInfo): the owner is whoever created the first instance, and a user's process
cannot make it anyone but itself (the service names its own user as the owner). Trusted owners
(`trusted_owners`): SYSTEM, Administrators, LocalService, NetworkService, the service's SID, and the
tray's own user (an agent one runs oneself). Anything else: `NotGenuineService`.

The pywin32 calls go through `win`, a namespace of the modules (`win32pipe`, `win32file`,
`win32security`, `win32api`, `pywintypes`), so tests drive this very code with fakes on Linux.
"""

from __future__ import annotations

import logging
import threading
import time
from types import SimpleNamespace
from typing import Any

from agent import errors
from agent.link.channel import Caller, ChannelServer, read_frame

log = logging.getLogger(__name__)

PIPE_NAME = r"\\.\pipe\POSPal.LicenseAgent"
SERVICE_NAME = "POSPalAgent"
MAX_INSTANCES = 32
BUFFER = 65536

SYSTEM = "S-1-5-18"
LOCAL_SERVICE = "S-1-5-19"
NETWORK_SERVICE = "S-1-5-20"
ADMINISTRATORS = "S-1-5-32-544"
INTERACTIVE = "S-1-5-4"

# winnt.h / winbase.h values, spelled out so the fakes and the real modules agree.
GENERIC_READ = 0x80000000
GENERIC_ALL = 0x10000000
FILE_READ_DATA = 0x0001
FILE_WRITE_DATA = 0x0002
FILE_READ_ATTRIBUTES = 0x0080
READ_CONTROL = 0x00020000
SYNCHRONIZE = 0x00100000
# What users get on the pipe: talk, and read who owns it. Never FILE_CREATE_PIPE_INSTANCE (0x0004).
CLIENT_ACCESS = FILE_READ_DATA | FILE_WRITE_DATA | FILE_READ_ATTRIBUTES | READ_CONTROL | SYNCHRONIZE
PIPE_ACCESS_DUPLEX = 0x00000003
FILE_FLAG_FIRST_PIPE_INSTANCE = 0x00080000
PIPE_TYPE_BYTE = 0x00000000
PIPE_READMODE_BYTE = 0x00000000
PIPE_WAIT = 0x00000000
PIPE_REJECT_REMOTE_CLIENTS = 0x00000008
OPEN_EXISTING = 3
SECURITY_SQOS_PRESENT = 0x00100000
SECURITY_IDENTIFICATION = 0x00010000
SE_KERNEL_OBJECT = 6
OWNER_SECURITY_INFORMATION = 0x00000001
TOKEN_QUERY = 0x0008
ACL_REVISION = 2
ERROR_FILE_NOT_FOUND = 2
ERROR_ACCESS_DENIED = 5
ERROR_PIPE_BUSY = 231
ERROR_BROKEN_PIPE = 109
ERROR_PIPE_CONNECTED = 535


def pywin32() -> Any:  # pragma: no cover - Windows only
    """The real modules, as the namespace this module calls through."""
    import pywintypes
    import win32api
    import win32file
    import win32pipe
    import win32security

    return SimpleNamespace(
        win32pipe=win32pipe,
        win32file=win32file,
        win32security=win32security,
        win32api=win32api,
        pywintypes=pywintypes,
    )


def _winerror(win: Any, exc: BaseException) -> int:
    return int(
        getattr(exc, "winerror", 0) or (exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0)
    )


def service_sid() -> str:
    """The SID of `NT SERVICE\\POSPalAgent` (derived from the service name, as Windows does)."""
    from agent.host.winacl import service_sid as derive

    return derive(SERVICE_NAME)


def pipe_dacl(win: Any) -> Any:
    """The pipe's security attributes: SYSTEM and the service all, interactive users `CLIENT_ACCESS`;
    owned by this process's user, named explicitly (a token's default owner may be a group: Wine's is)."""
    sec = win.win32security
    acl = sec.ACL()
    acl.AddAccessAllowedAce(ACL_REVISION, GENERIC_ALL, sec.ConvertStringSidToSid(SYSTEM))
    acl.AddAccessAllowedAce(ACL_REVISION, GENERIC_ALL, sec.ConvertStringSidToSid(service_sid()))
    acl.AddAccessAllowedAce(ACL_REVISION, CLIENT_ACCESS, sec.ConvertStringSidToSid(INTERACTIVE))
    sd = sec.SECURITY_DESCRIPTOR()
    sd.SetSecurityDescriptorOwner(sec.ConvertStringSidToSid(own_sid(win)), 0)
    sd.SetSecurityDescriptorDacl(1, acl, 0)
    attributes = sec.SECURITY_ATTRIBUTES()
    attributes.SECURITY_DESCRIPTOR = sd
    return attributes


def own_sid(win: Any) -> str:
    """This process's user SID."""
    sec = win.win32security
    token = sec.OpenProcessToken(win.win32api.GetCurrentProcess(), TOKEN_QUERY)
    try:
        return str(sec.ConvertSidToStringSid(sec.GetTokenInformation(token, sec.TokenUser)[0]))
    finally:
        _close(win, token)


def trusted_owners(win: Any) -> frozenset[str]:
    """Pipe owners a genuine service can have (see the module docstring)."""
    return frozenset({SYSTEM, ADMINISTRATORS, LOCAL_SERVICE, NETWORK_SERVICE, service_sid(), own_sid(win)})


def _close(win: Any, handle: Any) -> None:
    try:
        win.win32file.CloseHandle(handle)
    except Exception:  # closing twice, or a handle the OS already closed: nothing to do
        log.debug("close failed", exc_info=True)


class PipeStream:
    """`agent.link.channel.Stream` over a pipe handle."""

    def __init__(self, win: Any, handle: Any, *, server: bool = False) -> None:
        self.win = win
        self.handle = handle
        self._server = server

    def recv_exact(self, n: int) -> bytes:
        """Exactly `n` bytes, b"" at a clean end (the other side closed)."""
        chunks: list[bytes] = []
        got = 0
        while got < n:
            try:
                _hr, data = self.win.win32file.ReadFile(self.handle, n - got)
            except self.win.pywintypes.error as exc:
                if _winerror(self.win, exc) == ERROR_BROKEN_PIPE:
                    break
                raise OSError(f"pipe read failed: {exc}") from exc
            if not data:
                break
            chunks.append(bytes(data))
            got += len(data)
        return b"".join(chunks)

    def send_all(self, data: bytes) -> None:
        """Write all of `data`."""
        view = memoryview(data)
        while view:
            try:
                _hr, written = self.win.win32file.WriteFile(self.handle, bytes(view))
            except self.win.pywintypes.error as exc:
                raise OSError(f"pipe write failed: {exc}") from exc
            view = view[written:]

    def close(self) -> None:
        """Disconnect (server side) and close the handle."""
        if self._server:
            try:
                self.win.win32pipe.DisconnectNamedPipe(self.handle)
            except Exception:  # the client is already gone
                log.debug("disconnect failed", exc_info=True)
        _close(self.win, self.handle)


def identify(win: Any, handle: Any) -> Caller:
    """Who is on the other end of a server handle: impersonate the client, read its token, revert.
    Raises OSError when the client cannot be identified (then it gets nothing)."""
    sec = win.win32security
    pid = None
    try:
        pid = int(win.win32pipe.GetNamedPipeClientProcessId(handle))
    except win.pywintypes.error:
        pid = None
    try:
        sec.ImpersonateNamedPipeClient(handle)
    except win.pywintypes.error as exc:
        raise OSError(f"cannot identify the pipe's client: {exc}") from exc
    try:
        token = sec.OpenThreadToken(win.win32api.GetCurrentThread(), TOKEN_QUERY, True)
        try:
            sid = str(sec.ConvertSidToStringSid(sec.GetTokenInformation(token, sec.TokenUser)[0]))
            session = int(sec.GetTokenInformation(token, sec.TokenSessionId))
        finally:
            _close(win, token)
    except win.pywintypes.error as exc:
        raise OSError(f"cannot read the pipe client's token: {exc}") from exc
    finally:
        sec.RevertToSelf()
    return Caller(sid, str(session), pid)


def connect(
    *, win: Any = None, name: str = PIPE_NAME, timeout: float = 5.0, trusted: frozenset[str] | None = None
) -> PipeStream:
    """Open the service's pipe and prove its owner before anything is sent; raises `AgentUnavailable`
    (no pipe) or `NotGenuineService` (a pipe someone else created)."""
    win = win or pywin32()
    flags = SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION
    deadline = time.monotonic() + timeout
    while True:
        try:
            handle = win.win32file.CreateFile(
                name, GENERIC_READ | FILE_WRITE_DATA, 0, None, OPEN_EXISTING, flags, None
            )
            break
        except win.pywintypes.error as exc:
            code = _winerror(win, exc)
            left_ms = int((deadline - time.monotonic()) * 1000)
            if code == ERROR_PIPE_BUSY and left_ms > 0:
                try:
                    win.win32pipe.WaitNamedPipe(name, left_ms)
                except win.pywintypes.error:
                    pass
                continue
            if code == ERROR_ACCESS_DENIED:
                # A pipe of that name this user may not open: not the service's (whose DACL lets them).
                raise errors.NotGenuineService(f"{name} refuses this user") from exc
            raise errors.AgentUnavailable("The POSPal License service is not running.") from exc
    sec = win.win32security
    try:
        owner_sd = sec.GetSecurityInfo(handle, SE_KERNEL_OBJECT, OWNER_SECURITY_INFORMATION)
        owner = str(sec.ConvertSidToStringSid(owner_sd.GetSecurityDescriptorOwner()))
    except win.pywintypes.error as exc:
        _close(win, handle)
        raise errors.NotGenuineService(f"the owner of {name} cannot be read") from exc
    allowed = trusted_owners(win) if trusted is None else trusted
    if owner not in allowed:
        _close(win, handle)
        log.warning("refused the pipe %s: its owner %s is not the service", name, owner)
        raise errors.NotGenuineService(f"{name} belongs to {owner}, not to the service")
    return PipeStream(win, handle)


class PipeChannel:
    """The listening side: one instance waits for a client at a time; each connected client is served on
    its own thread, at most `MAX_INSTANCES` at once."""

    def __init__(self, server: ChannelServer, *, win: Any = None, name: str = PIPE_NAME) -> None:
        self.win = win or pywin32()
        self.name = name
        self._server = server
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._open: set[Any] = set()
        self._attributes = pipe_dacl(self.win)
        # The first instance now, so a name someone else holds fails the start, loudly.
        self._waiting: Any = self._instance(first=True)

    def _instance(self, *, first: bool = False) -> Any:
        mode = PIPE_ACCESS_DUPLEX | (FILE_FLAG_FIRST_PIPE_INSTANCE if first else 0)
        pipe_mode = PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS
        try:
            return self.win.win32pipe.CreateNamedPipe(
                self.name, mode, pipe_mode, MAX_INSTANCES, BUFFER, BUFFER, 0, self._attributes
            )
        except self.win.pywintypes.error as exc:
            if first and _winerror(self.win, exc) == ERROR_ACCESS_DENIED:
                raise errors.StoreError(
                    f"another program already holds the pipe {self.name}: the tray cannot reach the service"
                ) from exc
            raise OSError(f"cannot create the pipe {self.name}: {exc}") from exc

    def start(self) -> PipeChannel:
        """Accept in a daemon thread; returns self."""
        self._thread = threading.Thread(target=self._accept_loop, name="pospal-pipe", daemon=True)
        self._thread.start()
        log.info("tray channel listening on %s", self.name)
        return self

    def stop(self) -> None:
        """Stop accepting (a connection of our own wakes the waiting instance) and close every pipe."""
        self._stop.set()
        try:
            wake = self.win.win32file.CreateFile(
                self.name, GENERIC_READ | FILE_WRITE_DATA, 0, None, OPEN_EXISTING, 0, None
            )
            _close(self.win, wake)
        except self.win.pywintypes.error:
            pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            streams = list(self._open)
        for stream in streams:
            stream.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            handle = self._waiting
            try:
                self.win.win32pipe.ConnectNamedPipe(handle, None)
            except self.win.pywintypes.error as exc:
                if _winerror(self.win, exc) != ERROR_PIPE_CONNECTED:
                    log.warning("pipe connect failed: %s", exc)
                    _close(self.win, handle)
                    if self._stop.wait(0.5):
                        return
                    self._waiting = self._next()
                    continue
            if self._stop.is_set():
                _close(self.win, handle)
                return
            self._waiting = self._next()
            stream = PipeStream(self.win, handle, server=True)
            with self._lock:
                self._open.add(stream)
            threading.Thread(target=self._serve, args=(stream,), name="pospal-pipe-conn", daemon=True).start()

    def _next(self) -> Any:
        while not self._stop.is_set():
            try:
                return self._instance()
            except OSError as exc:  # all instances busy: wait for one to end
                log.warning("%s", exc)
                self._stop.wait(0.5)
        return None

    def _serve(self, stream: PipeStream) -> None:
        from agent.link.channel import encode

        try:
            # The client's token is known to the pipe once it wrote: read the first frame, then identify.
            first = read_frame(stream)
            if first is None:
                return
            caller = identify(self.win, stream.handle)
            stream.send_all(encode(self._server.handle(first, caller)))
            self._server.serve(stream, caller)
        except (OSError, errors.Error) as exc:
            log.info("tray connection ended: %s", exc)
        finally:
            with self._lock:
                self._open.discard(stream)
            stream.close()
