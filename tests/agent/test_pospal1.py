"""The old POSPal app's license file: only this PC opens it, a damaged or foreign one is passed over."""

from __future__ import annotations

from agent.pospal1 import LICENSE_FILE, find_old_license, old_dirs, read_old_license, seal_old_license

HW = "a" * 64
RECORD = {"customer_email": "Owner@Cafe.gr", "unlock_token": "abc123", "hardware_id": HW, "version": "1.0"}


def test_the_file_opens_under_this_pcs_old_hardware_id_only(tmp_path):
    path = tmp_path / LICENSE_FILE
    path.write_text(seal_old_license(RECORD, HW))

    found = read_old_license(path, HW)
    assert found is not None and (found.email, found.unlock_token) == ("owner@cafe.gr", "abc123")
    assert read_old_license(path, "b" * 64) is None  # copied from another PC


def test_a_damaged_or_incomplete_file_is_passed_over(tmp_path):
    damaged = tmp_path / "damaged" / LICENSE_FILE
    damaged.parent.mkdir()
    damaged.write_text("not a fernet token")
    empty = tmp_path / "empty" / LICENSE_FILE
    empty.parent.mkdir()
    empty.write_text(seal_old_license({"customer_email": "x@y.gr", "unlock_token": ""}, HW))
    good = tmp_path / "good" / LICENSE_FILE
    good.parent.mkdir()
    good.write_text(seal_old_license(RECORD, HW))

    assert read_old_license(damaged, HW) is None and read_old_license(empty, HW) is None
    found = find_old_license([damaged.parent, empty.parent, tmp_path / "absent", good.parent], HW)
    assert found is not None and found.path == good
    assert find_old_license([tmp_path / "absent"], HW) is None


def test_the_programdata_copy_is_searched_before_the_old_exe_folder(tmp_path):
    dirs = old_dirs({"PROGRAMDATA": str(tmp_path / "pd"), "POSPAL_OLD_APP_DIR": str(tmp_path / "exe")})
    assert dirs[0] == tmp_path / "pd" / "POSPal"
    assert dirs[-2:] == [tmp_path / "exe" / "data", tmp_path / "exe"]
