"""The old POSPal app's license on Windows (agent/vault/pospal1.py), under Windows Python (Wine in CI): the
Windows-only reads the Linux tests cannot run. The hardware id comes from `wmic` (Wine's) as the old app
read it, the folders from the known ProgramData folder, and a license sealed for this PC's id in
`%ProgramData%\\POSPal` is found and opened there; one sealed for another PC is left alone. Whether Wine's
`wmic` prints what a real PC's does (and so the old app's exact hash) is not shown here."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.windows


def test_the_old_license_in_programdata_opens_under_this_pcs_wmic_hardware_id(tmp_path: Path) -> None:
    from agent.host.winacl import program_data
    from agent.vault import pospal1

    hardware_id = pospal1.old_hardware_id()
    assert len(hardware_id) == 64 and pospal1.old_hardware_id() == hardware_id  # wmic twice, same PC
    dirs = pospal1.old_dirs(os.environ)
    folder = program_data() / "POSPal-oldapp-test"
    assert dirs[0] == program_data() / "POSPal" and Path(r"C:\POSPal\data") in dirs
    folder.mkdir(parents=True, exist_ok=True)
    try:
        data = {"customer_email": "owner@kafe.gr", "unlock_token": "k3j9", "hardware_id": hardware_id}
        (folder / pospal1.LICENSE_FILE).write_text(pospal1.seal_old_license(data, hardware_id), "ascii")
        found = pospal1.find_old_license([folder])
        assert found is not None and (found.email, found.unlock_token) == ("owner@kafe.gr", "k3j9")
        other = pospal1.seal_old_license(data, "0" * 64)  # the same file from another PC
        (folder / pospal1.LICENSE_FILE).write_text(other, "ascii")
        assert pospal1.find_old_license([folder]) is None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
