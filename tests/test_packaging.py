"""Packaging: build.spec's rules (packaging/spec_support.py), the ICU stub, the icon and the NSIS installer.

The full PyInstaller build runs in CI (scripts/bundle_smoke.sh); these tests check the decisions it
rests on, fast: nothing the agent or tray imports is excluded, server-only packages are, Qt files are
kept or dropped as intended, private keys fail the build, and the installer script compiles.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("pospal_spec_support", ROOT / "packaging" / "spec_support.py")
support = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(support)


def _top_level_imports(package: str) -> set[str]:
    """Every top-level module name imported anywhere in ROOT/package (absolute imports only)."""
    names: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
    return names


def _excluded(module: str) -> bool:
    return any(module == ex or module.startswith(ex + ".") for ex in support.EXCLUDED_MODULES)


def test_nothing_the_agent_or_tray_imports_is_excluded():
    used = _top_level_imports("agent") | _top_level_imports("ui")
    used |= {"agent", "ui", "PySide6.QtCore", "PySide6.QtGui", "PySide6.QtWidgets", "PySide6.QtNetwork"}
    assert sorted(m for m in used if _excluded(m)) == []


def _with_their_dependencies(modules: set[str]) -> set[str]:
    """`modules` plus the top-level modules of every installed distribution they need, transitively.

    The agent imports `tuf`, and tuf imports `securesystemslib`: a package the server also imports
    directly is agent-side as well when an agent-side package needs it, and must be bundled.
    """
    from importlib import metadata

    from packaging.requirements import Requirement

    by_module = metadata.packages_distributions()
    modules_of: dict[str, set[str]] = {}
    for module, dists in by_module.items():
        for dist in dists:
            modules_of.setdefault(dist.lower().replace("_", "-"), set()).add(module)
    todo = [dist for module in modules for dist in by_module.get(module, [])]
    seen: set[str] = set()
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return set(modules) | {m for dist in seen for m in modules_of.get(dist, set())}


def test_server_only_packages_are_excluded():
    agent_side = _with_their_dependencies(
        {m.split(".")[0] for m in _top_level_imports("agent") | _top_level_imports("ui")}
    )
    server_third_party = {
        m.split(".")[0]
        for m in _top_level_imports("server")
        if m.split(".")[0] not in sys.stdlib_module_names and m.split(".")[0] not in {"server", "agent"}
    }
    for must in ("fastapi", "uvicorn", "sqlalchemy", "alembic", "stripe", "psycopg", "redis", "server"):
        assert _excluded(must), must
    leaked = sorted(m for m in server_third_party - agent_side if not _excluded(m))
    assert leaked == [], f"server-only imports that would be bundled: {leaked}"


@pytest.mark.parametrize(
    ("dest", "kept"),
    [
        ("PySide6/Qt/lib/libQt6Core.so.6", True),
        ("PySide6/Qt/lib/libQt6Widgets.so.6", True),
        ("PySide6/Qt/lib/libQt6Network.so.6", True),
        ("PySide6/Qt/lib/libQt6XcbQpa.so.6", True),
        ("PySide6/Qt/lib/libQt6Qml.so.6", False),
        ("PySide6/Qt/lib/libQt6Quick.so.6", False),
        ("PySide6/Qt/lib/libQt6Pdf.so.6", False),
        ("PySide6/Qt/lib/libQt6OpenGL.so.6", False),
        ("PySide6/Qt/lib/libQt6WaylandClient.so.6", False),
        ("libQt6Svg.so.6", False),  # PyInstaller's top-level symlink to a dropped library
        ("PySide6/Qt6WebEngineCore.dll", False),
        ("PySide6/Qt6Gui.dll", True),
        ("PySide6/opengl32sw.dll", False),
        ("PySide6/Qt/plugins/platforms/libqxcb.so", True),
        ("PySide6/Qt/plugins/platforms/libqoffscreen.so", True),
        ("PySide6/Qt/plugins/platforms/libqeglfs.so", False),
        ("PySide6/Qt/plugins/platforms/libqwayland.so", False),
        ("PySide6/plugins/platforms/qwindows.dll", True),
        ("PySide6/plugins/styles/qmodernwindowsstyle.dll", True),
        ("PySide6/Qt/plugins/imageformats/libqico.so", True),
        ("PySide6/Qt/plugins/imageformats/libqjpeg.so", False),
        ("PySide6/Qt/plugins/platformthemes/libqgtk3.so", False),
        ("PySide6/Qt/plugins/tls/libqopensslbackend.so", False),
        ("PySide6/Qt/translations/qtbase_de.qm", False),
        ("PySide6/translations/qtbase_el.qm", False),
        ("PySide6/QtWidgets.abi3.so", True),
        ("PySide6/QtQml.abi3.so", False),
        ("PySide6/QtCore.pyd", True),
        ("libX11.so.6", False),
        ("libfontconfig.so.1", False),
        ("libxcb-cursor.so.0", True),  # minimal desktops lack it, and Qt's xcb plugin needs it
        ("libssl.so.3", True),
        ("libstdc++.so.6", False),
        ("libpython3.11.so.1.0", True),
        ("certifi/cacert.pem", True),
        ("agent/keys/trusted.json", True),
    ],
)
def test_keep_entry(dest, kept):
    assert support.keep_entry(dest) is kept
    assert support.keep_entry(dest.replace("/", "\\")) is kept


def test_prune_orphans_drops_what_only_dropped_plugins_needed():
    binaries = [
        ("lib-dynload/_ssl.so", "/src/_ssl.so", "EXTENSION"),
        ("libssl.so.3", "/src/libssl.so.3", "BINARY"),
        ("libcrypto.so.3", "/src/libcrypto.so.3", "BINARY"),
        ("libgtk-3.so.0", "/src/libgtk-3.so.0", "BINARY"),  # needed only by the dropped GTK theme
        ("PySide6/Qt/plugins/platforms/libqxcb.so", "/src/libqxcb.so", "BINARY"),
        ("libxcb-cursor.so.0", "/src/libxcb-cursor.so.0", "BINARY"),
        ("libpython3.11.so.1.0", "/src/libpython3.11.so.1.0", "BINARY"),
        ("libz.so.1", "/src/libz.so.1", "BINARY"),
    ]
    deps = {
        "/src/_ssl.so": ["libssl.so.3"],
        "/src/libssl.so.3": ["libcrypto.so.3", "libc.so.6"],
        "/src/libqxcb.so": ["libxcb-cursor.so.0"],
        "/src/libpython3.11.so.1.0": ["libz.so.1"],
    }
    kept = {d for d, *_ in support.prune_orphans(binaries, lambda src: deps.get(src, []))}
    assert kept == {d for d, *_ in binaries} - {"libgtk-3.so.0"}


def test_prune_orphans_matches_windows_dll_names_in_any_case():
    binaries = [
        ("PySide6/QtCore.pyd", "C:/s/QtCore.pyd", "EXTENSION"),
        ("PySide6/Qt6Core.dll", "C:/s/Qt6Core.dll", "BINARY"),
        ("PySide6/Qt6Pdf.dll", "C:/s/Qt6Pdf.dll", "BINARY"),
    ]
    kept = support.prune_orphans(binaries, lambda src: ["QT6CORE.DLL"] if src.endswith(".pyd") else [])
    assert [d for d, *_ in kept] == ["PySide6/QtCore.pyd", "PySide6/Qt6Core.dll"]


def _datas(tmp_path, files: dict[str, bytes]):
    out = []
    for dest, blob in files.items():
        src = tmp_path / dest.replace("/", "_")
        src.write_bytes(blob)
        out.append((dest, str(src), "DATA"))
    return out


def test_public_jwks_and_ca_bundle_pass(tmp_path):
    public = {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}
    support.check_no_private_keys(
        _datas(
            tmp_path,
            {
                "agent/keys/trusted.json": json.dumps(public).encode(),
                "certifi/cacert.pem": b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            },
        )
    )


def test_the_shipped_trusted_keys_hold_no_private_key():
    datas = [(f"agent/keys/{p.name}", str(p), "DATA") for p in (ROOT / "agent" / "keys").iterdir()]
    assert datas, "agent/keys/ is empty: the bundle would trust no key at all"
    support.check_no_private_keys(datas)


@pytest.mark.parametrize(
    ("dest", "blob"),
    [
        (
            "agent/keys/trusted.json",
            json.dumps({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "a", "d": "b"}]}),
        ),
        ("ui/assets/key.json", json.dumps({"kty": "OKP", "crv": "Ed25519", "x": "a", "d": "b"})),
        ("agent/keys/signing.pem", "-----BEGIN PRIVATE KEY-----\nMC4CAQ\n-----END PRIVATE KEY-----\n"),
        ("agent/keys/notes.txt", "public keys only"),
        ("somewhere/server.key", "anything"),
        ("ui/assets/readme.txt", "x -----BEGIN OPENSSH PRIVATE KEY----- y"),
    ],
)
def test_private_key_material_fails_the_build(tmp_path, dest, blob):
    with pytest.raises(support.PrivateKeyInBundle):
        support.check_no_private_keys(_datas(tmp_path, {dest: blob.encode()}))


def test_version_resource_comes_from_the_agent_version():
    """One version: pospal_protocol/__init__.py. The agent, the server and the installed metadata all show
    it."""
    from importlib.metadata import version as installed_version

    import agent
    import server

    version = support.read_version(ROOT)
    assert version == agent.__version__ == server.__version__ == installed_version("pospal-license")
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'dynamic = ["version"]' in pyproject and 'attr = "pospal_protocol.__version__"' in pyproject
    assert not re.search(r"^version\s*=\s*\"", pyproject, re.M)  # no literal second copy to drift


@pytest.mark.parametrize(
    ("text", "quad"), [("1.0.0", (1, 0, 0, 0)), ("2.13.4rc1", (2, 13, 4, 0)), ("3", (3, 0, 0, 0))]
)
def test_version_tuple(text, quad):
    assert support.version_tuple(text) == quad


def test_icon_is_a_real_multi_size_ico():
    blob = (ROOT / "packaging" / "pospal.ico").read_bytes()
    reserved, kind, count = struct.unpack_from("<HHH", blob)
    assert (reserved, kind) == (0, 1)
    sizes = {struct.unpack_from("<B", blob, 6 + 16 * i)[0] or 256 for i in range(count)}
    assert {16, 32, 48, 256} <= sizes


_ICU_PROBE = """
import sys
from PySide6.QtCore import QDate, QDateTime, QLocale, QTimeZone
el = QLocale(QLocale.Language.Greek, QLocale.Country.Greece)
en = QLocale(QLocale.Language.English, QLocale.Country.UnitedKingdom)
dt = QDateTime.fromSecsSinceEpoch(1798000000, QTimeZone.utc()).toLocalTime()
print(el.toString(QDate(2026, 12, 26), "d MMMM yyyy"), en.toString(dt, "d MMM yyyy, HH:mm"),
      el.toUpper("άδεια ενεργή"), el.toLower("ΆΔΕΙΑ"), sep="|")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the ICU stub replaces a Linux library")
def test_icu_stub_changes_nothing_the_tray_shows(tmp_path):
    qt_lib = Path(importlib.util.find_spec("PySide6").origin).parent / "Qt" / "lib"
    major = support.icu_data_major([(p.name, str(p), "BINARY") for p in qt_lib.glob("libicudata.so.*")])
    cc = shutil.which("cc") or shutil.which("gcc")
    if major is None or cc is None:
        pytest.skip("no ICU data library in this PySide6, or no C compiler")
    src = tmp_path / "stub.c"
    src.write_text(support.ICU_STUB_C % {"major": major})
    stub = tmp_path / f"libicudata.so.{major}"
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-s", "-o", str(stub), str(src)], check=True)
    assert stub.stat().st_size < 100_000

    def probe(extra_env):
        env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "TZ": "Europe/Athens", **extra_env}
        run = subprocess.run(
            [sys.executable, "-c", _ICU_PROBE], env=env, capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, run.stderr
        return run.stdout.strip(), run.stderr

    full, _ = probe({})
    stubbed, stderr = probe({"LD_LIBRARY_PATH": str(tmp_path)})
    assert stubbed == full
    assert "26 Δεκεμβρίου 2026" in full
    assert "icu" not in stderr.lower()


def test_installer_script_keeps_data_unless_asked_and_starts_for_every_user():
    nsi = (ROOT / "installer" / "pospal-agent.nsi").read_text(encoding="utf-8")
    assert re.search(r'^Section /o "un\.\$\(SecData\)"', nsi, re.M), (
        "data removal must be unticked by default"
    )
    assert re.search(r'WriteRegStr HKLM "\$\{REG_RUN\}"', nsi), "start at login must be per machine (HKLM)"
    assert "SetCompressor /SOLID lzma" in nsi
    assert "MUI_PAGE_LICENSE" in nsi and (ROOT / "installer" / "EULA.txt").is_file()
    assert "RequestExecutionLevel admin" in nsi and "$PROGRAMFILES64" in nsi


@pytest.mark.skipif(shutil.which("makensis") is None, reason="makensis not installed (apt-get install nsis)")
def test_installer_compiles_around_a_bundle(tmp_path):
    bundle = tmp_path / "POSPalLicenseAgent"
    (bundle / "_internal").mkdir(parents=True)
    (bundle / "POSPalLicenseAgent.exe").write_bytes(b"MZ stand-in")
    (bundle / "_internal" / "base_library.zip").write_bytes(b"PK stand-in")
    out = tmp_path / "POSPalLicenseAgent-Setup.exe"
    version = support.read_version(ROOT)
    run = subprocess.run(
        [
            "makensis",
            "-V2",
            f"-DVERSION={version}",
            f"-DBUNDLE_DIR={bundle}",
            f"-DOUTFILE={out}",
            str(ROOT / "installer" / "pospal-agent.nsi"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    blob = out.read_bytes()
    assert blob[:2] == b"MZ"
    # The version resource Explorer shows under Properties > Details.
    assert "POSPal License Agent".encode("utf-16-le") in blob
    assert version.encode("utf-16-le") in blob


@pytest.mark.skipif(shutil.which("makensis") is None, reason="makensis not installed (apt-get install nsis)")
def test_installer_refuses_to_compile_without_a_version(tmp_path):
    run = subprocess.run(
        ["makensis", "-V1", f"-DBUNDLE_DIR={tmp_path}", str(ROOT / "installer" / "pospal-agent.nsi")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0
    assert "VERSION" in run.stdout + run.stderr


def test_tray_code_avoids_the_qt_features_the_icu_stub_removes():
    # With the stub, QCollator and ICU codecs fall back and log a warning; nothing in ui/ may need them.
    pattern = re.compile(r"QCollator|localeAwareCompare|QStringConverter|QStringEncoder|QStringDecoder")
    hits = [
        str(p.relative_to(ROOT)) for p in (ROOT / "ui").rglob("*.py") if pattern.search(p.read_text("utf-8"))
    ]
    assert hits == []


@pytest.mark.skipif(
    shutil.which("makensis") is None or os.name == "nt", reason="needs makensis and a POSIX shell"
)
def test_installer_build_signs_uninstaller_and_installer(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "POSPalLicenseAgent.exe").write_bytes(b"MZ stand-in")
    signer = tmp_path / "sign.sh"
    signer.write_text(f'#!/bin/sh\necho "$1" >> "{tmp_path}/signed.txt"\n')
    out = tmp_path / "setup.exe"
    run = subprocess.run(
        [
            "makensis",
            "-V1",
            "-DVERSION=1.2.3",
            f"-DBUNDLE_DIR={bundle}",
            f"-DOUTFILE={out}",
            f"-DSIGN=sh {signer}",
            str(ROOT / "installer" / "pospal-agent.nsi"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    signed = (tmp_path / "signed.txt").read_text().split()
    assert len(signed) == 2, signed  # the uninstaller while it is embedded, then the installer itself
    assert signed[-1] == str(out)
