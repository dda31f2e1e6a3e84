"""An in-memory Windows for agent/link/winpipe.py: named pipes with owners and DACLs, tokens, impersonation.

`Kernel` is the machine (its pipes); `Kernel.process(sid, session)` gives one process's view, a namespace
shaped like the pywin32 modules winpipe calls (`win32pipe`, `win32file`, `win32security`, `win32api`,
`pywintypes`). What it enforces, as Windows does:

- creating a pipe name that exists with FILE_FLAG_FIRST_PIPE_INSTANCE, or adding an instance without
  FILE_CREATE_PIPE_INSTANCE in the pipe's DACL, fails with ERROR_ACCESS_DENIED;
- opening a pipe needs the asked access granted by its DACL to the caller's user SID or a group it is in
  (INTERACTIVE for processes in a session other than 0);
- the pipe's owner is its first creator's user SID (naming another owner fails: ERROR_INVALID_OWNER);
- impersonating a client gives the server thread the client's user SID and session.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from agent.link import winpipe

FILE_CREATE_PIPE_INSTANCE = 0x0004
GENERIC_WRITE = 0x40000000
_pids = itertools.count(5000)


class WinError(Exception):
    """pywintypes.error: (winerror, funcname, strerror)."""

    def __init__(self, winerror: int, func: str = "", text: str = "") -> None:
        super().__init__(winerror, func, text)
        self.winerror = winerror


@dataclass
class Identity:
    """A process's token."""

    sid: str
    session: int
    pid: int = field(default_factory=lambda: next(_pids))

    @property
    def groups(self) -> set[str]:
        """The user and the groups whose ACEs apply."""
        return {self.sid} | ({winpipe.INTERACTIVE} if self.session != 0 else set())


class _End:
    """One direction of a connected pipe."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False
        self.cond = threading.Condition()


@dataclass
class _Instance:
    pipe: _Pipe
    server: Identity
    connected: threading.Event = field(default_factory=threading.Event)
    client: Identity | None = None
    to_server: _End = field(default_factory=_End)
    to_client: _End = field(default_factory=_End)
    client_flags: int = 0
    client_wrote: bool = False


@dataclass
class _Pipe:
    name: str
    owner: str
    aces: list[tuple[int, str]]
    instances: list[_Instance] = field(default_factory=list)


@dataclass
class _Handle:
    kind: str  # "server", "client", "token"
    instance: _Instance | None = None
    token: Identity | None = None
    closed: bool = False


class _ACL:
    def __init__(self) -> None:
        self.aces: list[tuple[int, str]] = []

    def AddAccessAllowedAce(self, _revision: int, mask: int, sid: str) -> None:  # noqa: N802 (pywin32's name)
        self.aces.append((mask, sid))


class _SD:
    def __init__(self, owner: str | None = None) -> None:
        self.dacl: _ACL | None = None
        self.owner = owner

    def SetSecurityDescriptorDacl(self, _present: int, acl: _ACL, _defaulted: int) -> None:  # noqa: N802
        self.dacl = acl

    def SetSecurityDescriptorOwner(self, sid: str, _defaulted: int) -> None:  # noqa: N802
        self.owner = sid

    def GetSecurityDescriptorOwner(self) -> str:  # noqa: N802
        assert self.owner is not None
        return self.owner


def _granted(aces: list[tuple[int, str]], who: Identity) -> int:
    mask = 0
    for ace_mask, sid in aces:
        if sid in who.groups:
            if ace_mask & winpipe.GENERIC_ALL:
                ace_mask |= 0x001F01FF
            mask |= ace_mask
    return mask


class Kernel:
    """The machine: its named pipes, shared by every process view."""

    def __init__(self) -> None:
        self.pipes: dict[str, _Pipe] = {}
        self.lock = threading.Lock()
        self.opened_flags: list[int] = []

    def process(self, sid: str, session: int) -> SimpleNamespace:
        """The pywin32 modules as one process with this user SID and session sees them."""
        return _Process(self, Identity(sid, session)).modules()


class _Process:
    def __init__(self, kernel: Kernel, me: Identity) -> None:
        self.kernel = kernel
        self.me = me
        self.local = threading.local()

    # -- win32pipe --------------------------------------------------------------------------------------

    def CreateNamedPipe(self, name, open_mode, _pipe_mode, _max, _out, _in, _timeout, attributes):  # noqa: N802
        k = self.kernel
        with k.lock:
            pipe = k.pipes.get(name)
            if pipe is None:
                sd = attributes.SECURITY_DESCRIPTOR if attributes is not None else _SD()
                if sd.owner not in (None, self.me.sid):  # only one's own user may be named the owner
                    raise WinError(1307, "CreateNamedPipe", "ERROR_INVALID_OWNER")
                aces = sd.dacl.aces if sd.dacl is not None else []
                pipe = k.pipes[name] = _Pipe(name, self.me.sid, list(aces))
            elif open_mode & winpipe.FILE_FLAG_FIRST_PIPE_INSTANCE:
                raise WinError(winpipe.ERROR_ACCESS_DENIED, "CreateNamedPipe", "first instance exists")
            elif not _granted(pipe.aces, self.me) & FILE_CREATE_PIPE_INSTANCE:
                raise WinError(winpipe.ERROR_ACCESS_DENIED, "CreateNamedPipe", "no create-instance right")
            instance = _Instance(pipe, self.me)
            pipe.instances.append(instance)
        return _Handle("server", instance)

    def ConnectNamedPipe(self, handle: _Handle, _overlapped: Any) -> int:  # noqa: N802
        assert handle.instance is not None
        while not handle.instance.connected.wait(0.05):
            if handle.closed:
                raise WinError(6, "ConnectNamedPipe", "handle closed")
        return 0

    def DisconnectNamedPipe(self, handle: _Handle) -> None:  # noqa: N802
        self._hang_up(handle)

    def GetNamedPipeClientProcessId(self, handle: _Handle) -> int:  # noqa: N802
        assert handle.instance is not None and handle.instance.client is not None
        return handle.instance.client.pid

    def WaitNamedPipe(self, _name: str, _ms: int) -> None:  # noqa: N802
        return None

    # -- win32file --------------------------------------------------------------------------------------

    def CreateFile(self, name, access, _share, _sa, _disposition, flags, _template):  # noqa: N802
        k = self.kernel
        with k.lock:
            pipe = k.pipes.get(name)
            if pipe is None:
                raise WinError(winpipe.ERROR_FILE_NOT_FOUND, "CreateFile", "no such pipe")
            wanted = access & ~winpipe.GENERIC_READ
            if access & winpipe.GENERIC_READ:
                wanted |= winpipe.FILE_READ_DATA | winpipe.READ_CONTROL
            if wanted & ~_granted(pipe.aces, self.me) & 0xFFFFFFFF:
                raise WinError(winpipe.ERROR_ACCESS_DENIED, "CreateFile", "access denied")
            free = [i for i in pipe.instances if not i.connected.is_set()]
            if not free:
                raise WinError(winpipe.ERROR_PIPE_BUSY, "CreateFile", "all instances busy")
            instance = free[0]
            instance.client = self.me
            instance.client_flags = flags
            instance.connected.set()
            k.opened_flags.append(flags)
        return _Handle("client", instance)

    def _ends(self, handle: _Handle) -> tuple[_End, _End]:
        instance = handle.instance
        assert instance is not None
        if handle.kind == "server":
            return instance.to_server, instance.to_client
        return instance.to_client, instance.to_server

    def ReadFile(self, handle: _Handle, n: int) -> tuple[int, bytes]:  # noqa: N802
        inbound, _ = self._ends(handle)
        with inbound.cond:
            while not inbound.data and not inbound.closed:
                inbound.cond.wait(0.05)
            if not inbound.data:
                raise WinError(winpipe.ERROR_BROKEN_PIPE, "ReadFile", "pipe ended")
            out = bytes(inbound.data[:n])
            del inbound.data[:n]
        return 0, out

    def WriteFile(self, handle: _Handle, data: bytes) -> tuple[int, int]:  # noqa: N802
        _, outbound = self._ends(handle)
        with outbound.cond:
            if outbound.closed:
                raise WinError(winpipe.ERROR_BROKEN_PIPE, "WriteFile", "pipe ended")
            outbound.data += data
            outbound.cond.notify_all()
        if handle.kind == "client":
            assert handle.instance is not None
            handle.instance.client_wrote = True
        return 0, len(data)

    def _hang_up(self, handle: _Handle) -> None:
        if handle.instance is None:
            return
        for end in (handle.instance.to_server, handle.instance.to_client):
            with end.cond:
                end.closed = True
                end.cond.notify_all()

    def CloseHandle(self, handle: _Handle) -> None:  # noqa: N802
        handle.closed = True
        if handle.kind in ("server", "client"):
            self._hang_up(handle)
            instance = handle.instance
            if handle.kind == "server" and instance is not None:
                with self.kernel.lock:
                    pipe = instance.pipe
                    if instance in pipe.instances:
                        pipe.instances.remove(instance)
                    if not pipe.instances:
                        self.kernel.pipes.pop(pipe.name, None)

    # -- win32security ----------------------------------------------------------------------------------

    def ImpersonateNamedPipeClient(self, handle: _Handle) -> None:  # noqa: N802
        instance = handle.instance
        assert instance is not None and instance.client is not None
        if not instance.client_wrote:  # Windows knows the client's token only once it has written
            raise WinError(winpipe.ERROR_ACCESS_DENIED, "ImpersonateNamedPipeClient", "nothing read yet")
        self.local.token = instance.client

    def RevertToSelf(self) -> None:  # noqa: N802
        self.local.token = None

    def OpenThreadToken(self, _thread: Any, _access: int, _as_self: bool) -> _Handle:  # noqa: N802
        token = getattr(self.local, "token", None)
        if token is None:
            raise WinError(1008, "OpenThreadToken", "no token")
        return _Handle("token", token=token)

    def OpenProcessToken(self, _process: Any, _access: int) -> _Handle:  # noqa: N802
        return _Handle("token", token=self.me)

    def GetTokenInformation(self, token: _Handle, kind: str) -> Any:  # noqa: N802
        assert token.token is not None
        return (token.token.sid, 0) if kind == "user" else token.token.session

    def GetSecurityInfo(self, handle: _Handle, _type: int, _info: int) -> _SD:  # noqa: N802
        assert handle.instance is not None
        return _SD(handle.instance.pipe.owner)

    def modules(self) -> SimpleNamespace:
        """The namespace winpipe calls through."""
        return SimpleNamespace(
            win32pipe=SimpleNamespace(
                CreateNamedPipe=self.CreateNamedPipe,
                ConnectNamedPipe=self.ConnectNamedPipe,
                DisconnectNamedPipe=self.DisconnectNamedPipe,
                GetNamedPipeClientProcessId=self.GetNamedPipeClientProcessId,
                WaitNamedPipe=self.WaitNamedPipe,
            ),
            win32file=SimpleNamespace(
                CreateFile=self.CreateFile,
                ReadFile=self.ReadFile,
                WriteFile=self.WriteFile,
                CloseHandle=self.CloseHandle,
            ),
            win32security=SimpleNamespace(
                ACL=_ACL,
                SECURITY_DESCRIPTOR=_SD,
                SECURITY_ATTRIBUTES=SimpleNamespace,
                ConvertStringSidToSid=lambda sid: sid,
                ConvertSidToStringSid=lambda sid: sid,
                ImpersonateNamedPipeClient=self.ImpersonateNamedPipeClient,
                RevertToSelf=self.RevertToSelf,
                OpenThreadToken=self.OpenThreadToken,
                OpenProcessToken=self.OpenProcessToken,
                GetTokenInformation=self.GetTokenInformation,
                GetSecurityInfo=self.GetSecurityInfo,
                TokenUser="user",
                TokenSessionId="session",
            ),
            win32api=SimpleNamespace(GetCurrentThread=lambda: "thread", GetCurrentProcess=lambda: "process"),
            pywintypes=SimpleNamespace(error=WinError),
        )
