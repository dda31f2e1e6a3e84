"""What the person at the till runs, as their own account, in tests/agent/test_till_user.py.

Standard library only (it runs under the system's `python3 -I`, as another account than the tests, which
may not reach the test venv). One action per call, its outcome printed as one JSON line:

    read PATH | write PATH | delete PATH | mkdir PATH     -> {"ok": bool, "errno": name?}
    kill PID                                               -> {"ok": bool, "errno": name?}
    hello SOCKET                                           -> the channel's answer
    ask SOCKET CREDENTIAL METHOD PATH BODY_JSON            -> the channel's answer
    squat PORT SOCKET_DIR LOG      -> binds PORT and SOCKET_DIR/agent.sock (a dir it makes 0755), logs
                                      the bytes each receives, prints {"ok": true} once listening, then
                                      runs until killed
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import struct
import sys
import threading


def _outcome(fn) -> dict:
    try:
        fn()
    except OSError as exc:
        return {"ok": False, "errno": errno.errorcode.get(exc.errno or 0, str(exc.errno))}
    return {"ok": True}


def _frame(sock: socket.socket, obj: dict) -> dict:
    data = json.dumps(obj).encode()
    sock.sendall(struct.pack(">I", len(data)) + data)
    head = b""
    while len(head) < 4:
        head += sock.recv(4 - len(head))
    (size,) = struct.unpack(">I", head)
    body = b""
    while len(body) < size:
        body += sock.recv(size - len(body))
    return json.loads(body)


def _connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(path)
    return sock


def _squat(port: int, socket_dir: str, log: str) -> None:
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", port))
    tcp.listen(8)
    os.makedirs(socket_dir, mode=0o755, exist_ok=True)
    os.chmod(socket_dir, 0o755)
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(os.path.join(socket_dir, "agent.sock"))
    os.chmod(os.path.join(socket_dir, "agent.sock"), 0o666)
    unix.listen(8)
    lock = threading.Lock()

    def record(server: socket.socket, name: str) -> None:
        while True:
            conn, _ = server.accept()
            conn.settimeout(2)
            try:
                data = conn.recv(65536)
            except OSError:
                data = b""
            with lock, open(log, "a", encoding="utf-8") as out:
                out.write(json.dumps({"door": name, "bytes": len(data)}) + "\n")
            conn.close()

    threading.Thread(target=record, args=(tcp, "tcp"), daemon=True).start()
    threading.Thread(target=record, args=(unix, "unix"), daemon=True).start()
    print(json.dumps({"ok": True}), flush=True)
    signal.sigwait({signal.SIGTERM})


def main(argv: list[str]) -> None:
    """Run one action (see the module docstring)."""
    action, args = argv[0], argv[1:]
    if action == "read":
        result = _outcome(lambda: open(args[0], "rb").read())
    elif action == "write":
        result = _outcome(lambda: open(args[0], "ab").write(b"{}"))
    elif action == "delete":
        result = _outcome(lambda: os.unlink(args[0]))
    elif action == "mkdir":
        result = _outcome(lambda: os.mkdir(args[0]))
    elif action == "kill":
        result = _outcome(lambda: os.kill(int(args[0]), signal.SIGKILL))
    elif action == "hello":
        result = _frame(_connect(args[0]), {"method": "POST", "path": "hello", "body": {}})
    elif action == "ask":
        request = {"method": args[2], "path": args[3], "body": json.loads(args[4]), "credential": args[1]}
        result = _frame(_connect(args[0]), request)
    elif action == "squat":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        _squat(int(args[0]), args[1], args[2])
        return
    else:
        raise SystemExit(f"unknown action {action}")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
