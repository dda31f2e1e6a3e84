"""keyring's Windows backend (Credential Manager), which held the machine key before it moved to a
DPAPI-sealed per-machine file, and which the uninstaller's "remove my license data" clears."""

import secrets

import keyring
import pytest

pytestmark = pytest.mark.windows


def test_the_windows_keyring_is_credential_manager():
    from keyring.backends.Windows import WinVaultKeyring

    assert isinstance(keyring.get_keyring(), WinVaultKeyring)


def test_a_secret_round_trips_and_is_deleted():
    service = f"POSPal License Agent test {secrets.token_hex(4)}"
    backend = keyring.get_keyring()
    backend.set_password(service, "machine-key:test", "-----PEM-----")
    try:
        assert backend.get_password(service, "machine-key:test") == "-----PEM-----"
    finally:
        backend.delete_password(service, "machine-key:test")
    assert backend.get_password(service, "machine-key:test") is None
