"""The installer (installer/pospal-agent.nsi) installs the license core as a service and only the tray
per session: checked on the script as written, since Wine's SCM and Task Scheduler keep lossy copies and
a deployment tool's SYSTEM account cannot be simulated there. scripts/windows_smoke.sh runs it under Wine."""

from __future__ import annotations

import re
from pathlib import Path

NSI = Path(__file__).resolve().parents[1] / "installer" / "pospal-agent.nsi"


def text() -> str:
    return NSI.read_text(encoding="utf-8")


def section(name: str) -> str:
    body = text()[text().index(f'Section "{name}') :]
    return body[: body.index("SectionEnd")]


def test_login_starts_only_the_tray_never_the_whole_agent():
    runs = re.findall(r'WriteRegStr HKLM "\$\{REG_RUN\}" "\$\{RUN_VALUE\}" \'(.*)\'', text())
    assert runs == ['"$INSTDIR\\${APP_EXE}" run --tray-only']


def test_no_scheduled_task_and_no_start_as_the_installers_account():
    """The Users-group start task is gone (an older one is deleted); no finish-page run, which would start
    the tray as the elevated installer's account (SYSTEM under a deployment tool)."""
    assert "/Create" not in text()
    assert "S-1-5-32-545" not in text()
    assert "MUI_FINISHPAGE_RUN" not in text()
    assert "explorer.exe" not in text().lower()
    for name in ("-Program", "-un."):
        assert '/Delete /F /TN "${START_TASK}"' in section(name)


def test_install_copies_the_files_then_installs_and_starts_the_service():
    main = section("-Program")
    files, install, start = (main.index(s) for s in ("File /r", "service install", "service start"))
    assert files < install < start
    after_install = main[install : main.index("service start")]
    assert "Abort" in after_install and "SetErrorLevel" in after_install  # a failed install fails setup


def test_every_install_stops_the_service_and_the_trays_before_replacing_files():
    main = section("-Program")
    assert main.index("!insertmacro StopAgent") < main.index("File /r")
    macro = text()[text().index("!macro StopAgent") : text().index("!macroend")]
    assert "service stop" in macro and "taskkill" in macro


def test_uninstall_removes_the_service_before_the_files():
    un = section("-un.")
    assert un.index("service remove") < un.index('Delete "$INSTDIR\\${CLI_EXE}"')


def test_removedata_removes_the_per_machine_data():
    body = text()[text().index('Section /o "un.$(SecData)"') :]
    data = body[: body.index("SectionEnd")]
    assert 'RMDir /r "$APPDATA\\${MACHINE_DATA}"' in data  # SetShellVarContext all: %ProgramData%\POSPal


def test_uninstall_removes_the_launchers_install_but_not_the_license_data():
    """%ProgramData%\\POSPal\\install (the service's seed and staged updates) is program code: a plain
    uninstall removes it after the service is gone; the license data beside it stays."""
    un = section("-un.")
    assert un.index("service remove") < un.index('RMDir /r "$APPDATA\\${MACHINE_DATA}\\install"')
    assert 'RMDir /r "$APPDATA\\${MACHINE_DATA}"\n' not in un
