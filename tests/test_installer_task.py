"""The installer's upgrade restart (installer/pospal-agent.nsi, StartAgentAsUser): the scheduled task it
registers must start the agent as each logged-in user, never as the installer's own account.

Wine's Task Scheduler keeps only a lossy copy of a task, so the definition is checked here, as written.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

NSI = Path(__file__).resolve().parents[1] / "installer" / "pospal-agent.nsi"
NS = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}


def task_xml() -> ET.Element:
    """The XML StartAgentAsUser writes, with the NSIS escapes and variables resolved."""
    text = NSI.read_text(encoding="utf-8")
    body = text[text.index("Function StartAgentAsUser") :]
    body = body[: body.index("FunctionEnd")]
    lines = re.findall(r"^\s*FileWrite \$0 '(.*)'\s*$", body, re.M)
    xml = "".join(lines).replace("$\\r$\\n", "\n")
    xml = xml.replace("$INSTDIR", r"C:\Program Files\POSPal License Agent")
    xml = xml.replace("${APP_EXE}", "POSPalLicenseAgent.exe").replace("${PRODUCT}", "POSPal License Agent")
    return ET.fromstring(xml.encode("utf-8"))


def test_the_task_runs_as_the_users_group_with_a_limited_token():
    principal = task_xml().find("t:Principals/t:Principal", NS)
    assert principal.find("t:GroupId", NS).text == "S-1-5-32-545"  # BUILTIN\\Users: each logged-in user
    assert principal.find("t:RunLevel", NS).text == "LeastPrivilege"
    assert principal.find("t:UserId", NS) is None, "a fixed account (SYSTEM, an admin) is the wrong one"


def test_the_task_starts_the_installed_agent_in_every_session_and_never_times_out():
    task = task_xml()
    assert task.find("t:Actions", NS).get("Context") == task.find("t:Principals/t:Principal", NS).get("id")
    command = task.find("t:Actions/t:Exec/t:Command", NS).text
    assert command == r'"C:\Program Files\POSPal License Agent\POSPalLicenseAgent.exe"'
    settings = task.find("t:Settings", NS)
    assert settings.find("t:MultipleInstancesPolicy", NS).text == "Parallel"  # one per logged-in user
    assert settings.find("t:ExecutionTimeLimit", NS).text == "PT0S"
    assert settings.find("t:DisallowStartIfOnBatteries", NS).text == "false"


def test_the_uninstaller_removes_the_task():
    text = NSI.read_text(encoding="utf-8")
    uninstall = text[text.index('Section "-un.') :]
    assert '/Delete /F /TN "${START_TASK}"' in uninstall[: uninstall.index("SectionEnd")]


def test_no_explorer_trick():
    """Starting the agent through explorer.exe runs it as SYSTEM when a deployment tool installs."""
    assert "explorer.exe" not in NSI.read_text(encoding="utf-8").lower()
