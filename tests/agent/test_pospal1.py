"""The old POSPal app's license file: only this PC opens it, a damaged or foreign one is passed over."""

from __future__ import annotations

from agent.vault.pospal1 import LICENSE_FILE, find_old_license, old_dirs, read_old_license, seal_old_license

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


class _Status:
    def __init__(self, state: str, reason: str = "not_activated") -> None:
        self.license_state, self.reason = state, reason


class _Service:
    """Just what `take_over_once` uses of the agent service; `answer` is what the server does."""

    def __init__(self, answer, state: str = "license_missing") -> None:
        import threading

        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        self._state, self.language, self._generation, self.accepted = state, "el", 0, []
        self._lock, self._data, self.published = threading.Lock(), {}, 0
        key = Ed25519PrivateKey.generate()
        self.key_store = type("Keys", (), {"load_or_create": staticmethod(lambda: key)})()
        outer = self

        class Transport:
            def migrate(self, identity, body):
                outer.sent = body
                return answer(body)

        self.transport = Transport()

    def status(self):
        return _Status(self._state)

    def _changed(self):
        self._generation += 1

    def _save(self):
        pass

    def refresh_status(self):
        self.published += 1
        return self.status()

    def _machine_body(self, key):
        return {"fingerprint": {}, "machine_public_key": "k"}

    def _accept(self, answer, gen, nonce, force=False):
        self.accepted.append(answer)
        self._state = "licensed_active"


def _old_files(tmp_path):
    from agent.vault.pospal1 import old_hardware_id

    folder = tmp_path / "old"
    (folder / "data").mkdir(parents=True)
    record = {**RECORD, "hardware_id": old_hardware_id()}
    (folder / "data" / LICENSE_FILE).write_text(seal_old_license(record, old_hardware_id()))
    return {"POSPAL_OLD_APP_DIR": str(folder)}


def test_take_over_once_outcomes_are_kept_and_only_offline_is_tried_again(tmp_path):
    from agent.errors import Offline, ServerRefused
    from agent.vault.pospal1 import RESULT_FILE, take_over_once

    env = _old_files(tmp_path)

    def offline(_body):
        raise Offline("down")

    data = tmp_path / "offline-pc"
    data.mkdir()
    assert take_over_once(_Service(offline), data, env) == "offline"
    assert not (data / RESULT_FILE).exists()  # tried again at the next start

    def used(_body):
        raise ServerRefused("migration_used", "Already moved.")

    data = tmp_path / "second-pc"
    data.mkdir()
    assert take_over_once(_Service(used), data, env) == "refused:migration_used"
    assert take_over_once(_Service(used), data, env) == "skipped"  # once: the refusal is remembered

    data = tmp_path / "first-pc"
    data.mkdir()
    service = _Service(lambda body: {"token": "t", "machine_id": "m_1", "license_id": "lic_1"})
    assert take_over_once(service, data, env) == "licensed"
    assert service.sent["email"] == "owner@cafe.gr" and service.sent["unlock_token"] == "abc123"
    assert service.sent["locale"] == "el"

    data = tmp_path / "licensed-pc"
    data.mkdir()
    assert take_over_once(_Service(used, state="licensed_active"), data, env) == "skipped"
    data = tmp_path / "no-old-app"
    data.mkdir()
    assert take_over_once(_Service(used), data, {}) == "none"


def test_an_old_trial_file_sends_this_pcs_old_id_with_the_trial_request(tmp_path):
    """No old license but an old trial.json: the first trial request carries the old hardware id, so the
    server can continue the old trial; the old file is left as it was."""
    from agent.vault.pospal1 import RESULT_FILE, TRIAL_FILE, take_over_once
    from tests.agent.test_service import Rig

    folder = tmp_path / "old"
    (folder / "data").mkdir(parents=True)
    old_trial = folder / "data" / TRIAL_FILE
    old_trial.write_text('{"first_run_date": "2026-02-20", "signature": "x"}')
    rig = Rig(tmp_path)
    svc = rig.service()
    assert take_over_once(svc, tmp_path / "data", {"POSPAL_OLD_APP_DIR": str(folder)}) == "trial"
    assert (tmp_path / "data" / RESULT_FILE).exists()
    svc.start_trial()
    sent = rig.cloud.trial_bodies[-1]["pospal1_hardware_id"]
    assert len(sent) == 64 and int(sent, 16) >= 0
    assert old_trial.read_text().startswith('{"first_run_date"')
    # Kept in the agent's state: a trial request after a restart sends it too.
    assert rig.service()._trial_body(svc.key_store.load_or_create())["pospal1_hardware_id"] == sent


def test_without_an_old_trial_file_no_old_id_is_sent(tmp_path):
    from agent.vault.pospal1 import take_over_once
    from tests.agent.test_service import Rig

    rig = Rig(tmp_path)
    svc = rig.service()
    assert take_over_once(svc, tmp_path / "data", {}) == "none"
    svc.start_trial()
    assert "pospal1_hardware_id" not in rig.cloud.trial_bodies[-1]


def _refuse(code: str):
    """`POST /v1/migrations` refusing as the server does (here: the old token was already used)."""

    def migrate(identity, body):
        from agent.errors import ServerRefused

        raise ServerRefused(code, "Refused.")

    return migrate


def test_a_refused_move_says_why_in_the_status_message_and_activation_is_still_offered(tmp_path):
    """The window's card and the POS's message say the old key was already used (English and Greek);
    the state stays license_missing / not_activated, the old file stays, and a trial still starts."""
    from agent.vault.pospal1 import take_over_once
    from tests.agent.test_service import Rig

    env = _old_files(tmp_path)
    old_file = tmp_path / "old" / "data" / LICENSE_FILE
    before = old_file.read_bytes()
    rig = Rig(tmp_path)
    rig.cloud.migrate = _refuse("migration_used")
    svc = rig.service()
    seen = []
    svc.subscribe(seen.append)
    assert take_over_once(svc, tmp_path / "data", env) == "refused:migration_used"
    status = svc.status()
    assert (status.license_state, status.reason) == ("license_missing", "not_activated")
    assert status.message.startswith("The old POSPal license was already moved to another computer.")
    assert "activate this PC with the code sent to the owner's email" in status.message
    assert status.message_in("el").startswith("Η παλιά άδεια POSPal έχει ήδη μεταφερθεί")
    assert seen and seen[-1] is status  # pushed to the window at once, not only at the next poll
    assert svc.diagnostics().extra["old_app_move"] == "used"
    assert old_file.read_bytes() == before
    # Kept across a restart, and gone once the PC is licensed some other way (here: the trial).
    restarted = rig.service()
    assert restarted.status().message.startswith("The old POSPal license was already moved")
    assert restarted.start_trial().license_state == "trial_active"


def test_a_damaged_old_license_says_it_cannot_be_read_and_is_left_as_it_is(tmp_path):
    from agent.vault.pospal1 import take_over_once
    from tests.agent.test_service import Rig

    folder = tmp_path / "old"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / LICENSE_FILE).write_text("not a license")
    rig = Rig(tmp_path)
    svc = rig.service()
    assert take_over_once(svc, tmp_path / "data", {"POSPAL_OLD_APP_DIR": str(folder)}) == "refused:unreadable"
    assert svc.status().license_state == "license_missing"
    assert "cannot be read" in svc.status().message
    assert svc.status().message_in("el").startswith("Υπάρχει παλιά άδεια POSPal")
    assert (folder / "data" / LICENSE_FILE).read_text() == "not a license"
    assert sum(rig.cloud.calls.values()) == 0  # nothing sent for a file this PC cannot open
