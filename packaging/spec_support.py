"""Build-time rules for build.spec: what the POSPalLicenseAgent bundle keeps, drops and refuses.

build.spec stays declarative; the decisions live here so tests can check them without running
PyInstaller. This file is loaded by path (``packaging/`` is not a Python package, on purpose: a
package named ``packaging`` would shadow the PyPI library that pip and pytest import).

What it owns:
- ``EXCLUDED_MODULES``: server-only, dev-only and unused Qt modules kept out of the analysis.
- ``keep_entry``: the per-file filter for Qt libraries, plugins and translations PyInstaller collected.
- ``prune_orphans``: drops shared libraries nothing kept still links to (left behind by dropped plugins).
- ``check_no_private_keys``: fails the build when key material other than public JWKS would ship.
- ``version_info_text``: the Windows version resource, generated from ``pospal_protocol.__version__``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

APP_NAME = "POSPalLicenseAgent"
PRODUCT_NAME = "POSPal License Agent"
COMPANY_NAME = "POSPal"

# The Qt modules the tray app uses. QtNetwork stays for QLocalServer (single instance); QtDBus is a
# dependency of QtGui on Linux (tray icons go over D-Bus StatusNotifier) and of nothing on Windows.
QT_MODULES_KEPT = ("QtCore", "QtGui", "QtWidgets", "QtNetwork")
QT_LIBS_KEPT = frozenset({"Core", "Gui", "Widgets", "Network", "DBus", "XcbQpa"})

# Qt plugins by category -> the plugin names that may ship. Everything else (EGL, Wayland, VNC, GTK
# theme with its GTK dependency tree, TLS backends, network information, SVG icon engine...) goes.
QT_PLUGINS_KEPT = {
    "platforms": {"qxcb", "qoffscreen", "qminimal", "qwindows", "qcocoa"},
    "imageformats": {"qico"},
    "styles": None,  # None: every plugin of the category (Windows' native widget style lives here)
    "platforminputcontexts": {"composeplatforminputcontextplugin", "ibusplatforminputcontextplugin"},
}

_QT_BINDINGS_ALL = (
    "Qt3DAnimation Qt3DCore Qt3DExtras Qt3DInput Qt3DLogic Qt3DRender QtAxContainer QtBluetooth QtCharts "
    "QtConcurrent QtDataVisualization QtDBus QtDesigner QtGraphs QtGraphsWidgets QtHelp QtHttpServer "
    "QtLabsStyleKit QtLocation QtMultimedia QtMultimediaWidgets QtNetworkAuth QtNfc QtOpenGL "
    "QtOpenGLWidgets QtPdf QtPdfWidgets QtPositioning QtPrintSupport QtQml QtQuick QtQuick3D "
    "QtQuickControls2 QtQuickTest QtQuickWidgets QtRemoteObjects QtScxml QtSensors QtSerialBus "
    "QtSerialPort QtSpatialAudio QtSql QtStateMachine QtSvg QtSvgWidgets QtTest QtTextToSpeech QtUiTools "
    "QtWebChannel QtWebEngineCore QtWebEngineQuick QtWebEngineWidgets QtWebSockets QtWebView QtXml"
).split()

EXCLUDED_MODULES = (
    # The cloud service and everything only it needs. The agent never imports server/.
    "server",
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "alembic",
    "mako",
    "stripe",
    "psycopg",
    "psycopg_binary",
    "psycopg_pool",
    "redis",
    "prometheus_client",
    "pydantic",
    "pydantic_core",
    "anyio",
    "sniffio",
    "httpx",
    "httpcore",
    "h11",
    "httptools",
    "websockets",
    "watchfiles",
    "uvloop",
    "dotenv",
    "email_validator",
    "jinja2",
    "markupsafe",
    "yaml",
    "sqlite3",
    # Development and test tools.
    "pytest",
    "_pytest",
    "pytestqt",
    "hypothesis",
    "localstripe",
    "aiosmtpd",
    "schemathesis",
    "matplotlib",
    "numpy",
    "PIL",
    "IPython",
    "PyInstaller",
    "setuptools",
    "pkg_resources",
    "pip",
    "tkinter",
    "_tkinter",
    "lib2to3",
    "pydoc_data",
    "curses",
    "xmlrpc",
    # East Asian codecs (about 1 MB): a POS in Greece or Cyprus reads UTF-8, Latin and Greek code pages.
    "_codecs_cn",
    "_codecs_hk",
    "_codecs_iso2022",
    "_codecs_jp",
    "_codecs_kr",
    "_codecs_tw",
    "_multibytecodec",
    # Qt bindings the app does not use.
    *(f"PySide6.{name}" for name in _QT_BINDINGS_ALL),
)

_QT_LIB_RE = re.compile(r"^(?:lib)?Qt6(?P<module>\w+?)(?:\.so\.6|\.dll|\.dylib)$")
# Linux libraries the host supplies wherever a display exists, following the AppImage "excludelist"
# convention: bundling them saves nothing useful and breaks on other distributions (a bundled
# fontconfig cannot read a newer host's fonts.conf; a bundled libX11 may not match the host's libxcb).
# libstdc++ and libgcc_s are required base packages on every distribution, and the PySide6 wheels
# (manylinux_2_28) need no newer libstdc++ than any glibc-2.28 system has.
# Kept on purpose: the xcb-util family and xkbcommon-x11 (Qt needs them and minimal desktops lack
# them), and the libraries Python itself links that distributions version differently (zlib, bz2,
# lzma, ffi, ssl, crypto).
LINUX_HOST_LIBS = re.compile(
    r"^lib(stdc\+\+|gcc_s|"
    r"X11|X11-xcb|Xau|Xdmcp|xcb|fontconfig|freetype|glib-2\.0|gthread-2\.0|gobject-2\.0|gio-2\.0|"
    r"pcre2-8|dbus-1|systemd|gcrypt|gpg-error|krb5|krb5support|gssapi_krb5|k5crypto|com_err|keyutils|"
    r"expat|uuid|cap|lz4|zstd|bsd|md|png16|brotlicommon|brotlidec|GL|EGL|GLX|GLdispatch|OpenGL)\.so(\.\d+)*$"
)

_QT_BINDING_RE = re.compile(r"^(?P<module>Qt\w+)\.(?:abi3\.so|pyd|.*\.so)$")
_QT_SUPPORT_DROPPED = re.compile(r"^(opengl32sw\.dll|d3dcompiler_\d+\.dll|libEGL\.dll|libGLESv2\.dll)$", re.I)


def _qt_relative(dest: str) -> PurePosixPath | None:
    """Return the path of ``dest`` below the PySide6 package, or None when it is not part of it."""
    parts = PurePosixPath(dest.replace("\\", "/")).parts
    if "PySide6" not in parts:
        return None
    rel = parts[parts.index("PySide6") + 1 :]
    if rel and rel[0] == "Qt":  # Linux/macOS wheels nest Qt under PySide6/Qt; Windows ones do not
        rel = rel[1:]
    return PurePosixPath(*rel) if rel else None


def _plugin_name(filename: str) -> str:
    """Turn ``libqxcb.so`` / ``qwindows.dll`` into ``qxcb`` / ``qwindows``."""
    stem = filename.split(".")[0]
    return stem[3:] if stem.startswith("lib") else stem


def keep_entry(dest: str) -> bool:
    """Say whether a collected file (its destination path in the bundle) ships.

    Judged here: Qt libraries, plugins and translations, and Linux host libraries. Everything else the
    analysis found is kept.
    """
    name = PurePosixPath(dest.replace("\\", "/")).name
    match = _QT_LIB_RE.match(name)
    if match:  # wherever it sits: PyInstaller also places top-level symlinks to Qt libraries
        return match.group("module") in QT_LIBS_KEPT
    if LINUX_HOST_LIBS.match(name):
        return False
    rel = _qt_relative(dest)
    if rel is None:
        return True
    parts = rel.parts
    if parts[0] == "translations":
        # Qt ships no Greek qtbase catalogue, and our own strings come from agent.messages.
        return False
    if parts[0] == "plugins":
        if len(parts) < 3:
            return False
        allowed = QT_PLUGINS_KEPT.get(parts[1], set())
        return allowed is None or _plugin_name(parts[-1]) in allowed
    if parts[0] in {"qml", "resources", "libexec", "metatypes", "typesystems", "include", "glue", "doc"}:
        return False
    if _QT_SUPPORT_DROPPED.match(name):
        return False
    binding = _QT_BINDING_RE.match(name)
    if binding:
        return binding.group("module") in QT_MODULES_KEPT
    return True


def filter_toc(toc: Iterable[tuple], keep: Callable[[str], bool] = keep_entry) -> list[tuple]:
    """Return the TOC entries (dest, src, typecode) whose destination ``keep`` accepts."""
    return [entry for entry in toc if keep(entry[0])]


def prune_orphans(binaries: list[tuple], imports_of: Callable[[str], Iterable[str]]) -> list[tuple]:
    """Drop plain shared libraries that no kept extension, plugin or library links to any more.

    PyInstaller resolved dependencies before ``keep_entry`` removed plugins, so e.g. the GTK theme's
    whole GTK tree is still listed. Roots are the Python extensions, the Python runtime and the Qt
    plugins; ``imports_of(src)`` names the libraries a file links to (basenames).
    """

    def base(path: str) -> str:
        # Windows import tables spell DLL names in any case; ELF names never collide on case alone.
        return PurePosixPath(path.replace("\\", "/")).name.lower()

    by_name = {base(entry[0]): entry for entry in binaries}

    def is_root(entry: tuple) -> bool:
        dest = entry[0].replace("\\", "/")
        name = PurePosixPath(dest).name.lower()
        return (
            entry[2] == "EXTENSION"
            or "/plugins/" in f"/{dest}"
            or name.startswith(("libpython", "python"))
            or not re.search(r"\.(so(\.\d+)*|dll|dylib)$", name)
        )

    reached: set[str] = set()
    stack = [entry for entry in binaries if is_root(entry)]
    while stack:
        entry = stack.pop()
        name = base(entry[0])
        if name in reached:
            continue
        reached.add(name)
        for dep in imports_of(entry[1]):
            dep_entry = by_name.get(base(dep))
            if dep_entry is not None:
                stack.append(dep_entry)
    return [entry for entry in binaries if base(entry[0]) in reached]


_ICU_DATA_RE = re.compile(r"^libicudata\.so\.(?P<major>\d+)$")

# ICU's own "stubdata" library: a valid, empty data package. Qt links ICU for collation, codecs and
# time-zone names, none of which the tray uses; ICU keeps its core Unicode properties (case mapping,
# normalisation) in libicuuc itself, so Qt's string handling, Greek included, works without this data.
ICU_STUB_C = """\
/* Empty ICU common data (like ICU's stubdata/stubdata.cpp), replacing the 31 MB libicudata. */
struct pospal_icu_header {
    unsigned short headerSize;
    unsigned char magic1, magic2;
    struct {
        unsigned short size, reservedWord;
        unsigned char isBigEndian, charsetFamily, sizeofUChar, reservedByte;
        unsigned char dataFormat[4], formatVersion[4], dataVersion[4];
    } info;
    char padding[8];
    unsigned int count, reserved;
    struct { unsigned int nameOffset, dataOffset; } toc[1];
};
__attribute__((visibility("default"))) const struct pospal_icu_header icudt%(major)s_dat = {
    32, 0xda, 0x27,
    {20, 0, __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__, 0, 2, 0,
     {0x54, 0x6f, 0x43, 0x50}, {1, 0, 0, 0}, {0, 0, 0, 0}},
    {0}, 0, 0, {{0, 0}}
};
"""


def icu_data_major(binaries: Iterable[tuple]) -> str | None:
    """Return ICU's major version if the full libicudata is among the binaries, else None."""
    for dest, *_ in binaries:
        match = _ICU_DATA_RE.match(PurePosixPath(dest.replace("\\", "/")).name)
        if match:
            return match.group("major")
    return None


def replace_source(binaries: list[tuple], name: str, new_src: str) -> list[tuple]:
    """Return the binaries with every entry named ``name`` now copied from ``new_src``."""
    return [
        (dest, new_src, code) if PurePosixPath(dest.replace("\\", "/")).name == name else (dest, src, code)
        for dest, src, code in binaries
    ]


_PRIVATE_MARKERS = (b"PRIVATE KEY", b"OPENSSH PRIVATE")
# Key containers that are private by nature. (.pem is judged by content: certifi ships a CA bundle.)
_KEYISH_SUFFIXES = (".key", ".der", ".p8", ".p12", ".pfx", ".jwk")


class PrivateKeyInBundle(Exception):
    """A file that is or may be a private key was about to ship in the bundle."""


def _private_jwks(doc: object) -> bool:
    """Say whether a parsed JSON document is or holds a private JWK (an OKP/EC/RSA key with ``d``)."""
    keys = doc.get("keys", [doc]) if isinstance(doc, dict) else []
    return any(isinstance(key, dict) and "kty" in key and "d" in key for key in keys)


def check_no_private_keys(datas: Iterable[tuple]) -> None:
    """Raise PrivateKeyInBundle if any data file is private key material.

    Rules: no private-key container files (.key, .der, .p8, .p12, .pfx, .jwk); no file with a PEM
    private key block; no JSON file holding a private JWK; and ``agent/keys`` holds only .json.
    """
    for dest, src, typecode in datas:
        dest_posix = dest.replace("\\", "/")
        path = Path(src)
        if typecode == "SYMLINK" or path.is_dir():  # a SYMLINK's src is its target, checked on its own
            continue
        if dest_posix.lower().endswith(_KEYISH_SUFFIXES):
            raise PrivateKeyInBundle(f"key file would ship: {dest_posix}")
        blob = path.read_bytes()
        if any(marker in blob for marker in _PRIVATE_MARKERS):
            raise PrivateKeyInBundle(f"private key block in {dest_posix}")
        in_keys_dir = "agent/keys/" in f"/{dest_posix}/"
        if in_keys_dir and not dest_posix.endswith(".json"):
            raise PrivateKeyInBundle(f"only JWKS .json may ship in agent/keys: {dest_posix}")
        if dest_posix.endswith(".json"):
            try:
                doc = json.loads(blob)
            except ValueError as exc:
                if in_keys_dir:
                    raise PrivateKeyInBundle(f"{dest_posix} is not JSON: {exc}") from exc
                continue
            if _private_jwks(doc):
                raise PrivateKeyInBundle(f"{dest_posix} holds a private JWK (member 'd')")


def read_version(root: Path) -> str:
    """Read ``__version__`` from pospal_protocol/__init__.py (the one place it is set) without importing
    it."""
    text = (root / "pospal_protocol" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', text, re.M)
    if not match:
        raise ValueError("pospal_protocol/__init__.py has no __version__")
    return match.group(1)


def version_tuple(version: str) -> tuple[int, int, int, int]:
    """Map ``1.2.3`` (or ``1.2.3rc1``) to the four numbers Windows version resources need."""
    numbers = [
        int(re.match(r"\d+", part).group()) for part in version.split(".")[:4] if re.match(r"\d+", part)
    ]
    return tuple((numbers + [0, 0, 0, 0])[:4])  # type: ignore[return-value]


def version_info_text(version: str) -> str:
    """Return a PyInstaller version-file (VSVersionInfo) for the bundle's executable."""
    vt = version_tuple(version)
    dotted = ".".join(str(n) for n in vt)
    strings = {
        "CompanyName": COMPANY_NAME,
        "FileDescription": PRODUCT_NAME,
        "FileVersion": dotted,
        "InternalName": APP_NAME,
        "LegalCopyright": f"Copyright (c) {COMPANY_NAME}",
        "OriginalFilename": f"{APP_NAME}.exe",
        "ProductName": PRODUCT_NAME,
        "ProductVersion": version,
    }
    table = ",\n          ".join(f"StringStruct({k!r}, {v!r})" for k, v in strings.items())
    return f"""# Generated by packaging/spec_support.py from pospal_protocol.__version__ = {version!r}.
# Do not edit.
VSVersionInfo(
  ffi=FixedFileInfo(filevers={vt}, prodvers={vt}, mask=0x3f, flags=0x0, OS=0x40004,
                    fileType=0x1, subtype=0x0, date=(0, 0)),
  kids=[
    StringFileInfo([
      StringTable('040904B0', [
          {table}
      ])
    ]),
    VarFileInfo([VarStruct('Translation', [1033, 1200])])
  ]
)
"""
