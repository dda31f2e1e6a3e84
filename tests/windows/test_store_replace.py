"""agent/vault/store.py's atomic replace on Windows, where the tray and the POS may be reading the file.

On Windows, os.replace onto a file that another handle holds open without FILE_SHARE_DELETE fails
(PermissionError, sharing violation). Python's open() is such a handle, and so are many POS readers.
"""

import threading

import pytest

from agent.vault.store import StoreError, atomic_write

pytestmark = pytest.mark.windows


def test_a_reader_holding_the_file_delays_the_write_but_does_not_lose_it(tmp_path):
    path = tmp_path / "state.json"
    atomic_write(path, b'{"v": 1}')
    reader = open(path, "rb")  # noqa: SIM115 - held open on purpose, as a reader would
    released = threading.Event()

    def release():
        reader.close()
        released.set()

    timer = threading.Timer(0.2, release)
    timer.start()
    try:
        atomic_write(path, b'{"v": 2}', backup=tmp_path / "state.json.bak")
    finally:
        timer.cancel()
        if not released.is_set():
            reader.close()
    assert path.read_bytes() == b'{"v": 2}'
    assert (tmp_path / "state.json.bak").read_bytes() == b'{"v": 1}'
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")], "a temp file was left behind"


def test_a_reader_that_never_lets_go_gives_a_store_error_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "state.json"
    atomic_write(path, b"old")
    with open(path, "rb"):
        with pytest.raises(StoreError):
            atomic_write(path, b"new")
    assert path.read_bytes() == b"old"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")], "a temp file was left behind"
