"""Wine harness only (never shipped): keep CPython's platform module away from WMI.

CPython 3.13's platform module asks WMI for the Windows version; under Wine 8 that aborts the whole
process (propsys.dll lacks VariantToString). Raising OSError makes platform fall back to
sys.getwindowsversion(), as it does on a Windows without WMI. scripts/windows_env.sh puts this file
in the harness interpreter's site-packages; PyInstaller bundles never see it.
"""

import platform


def _no_wmi(*_args, **_kwargs):
    """Stand-in for platform._wmi_query: WMI is unavailable."""
    raise OSError("WMI disabled in the Wine harness")


platform._wmi_query = _no_wmi
