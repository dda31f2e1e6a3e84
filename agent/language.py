"""Which language the agent speaks: for status messages, e-mails it asks for, and the POS's `message`.

The order (PRODUCT.md "Configuration"): `POSPAL_LANGUAGE`; else the language chosen in the window (the
agent persists it, so the tray's choice reaches the POS); else the system's (the Windows UI language,
or the POSIX locale); else English. `resolve` is that rule as a pure function.

A POS app may also ask for one answer in another language without changing the agent's (`GET
/v1/license?lang=el`, or `Accept-Language`): every status carries its message in each language
(`LicenseStatus.translations`), so that answer is ready-made too.
"""

from __future__ import annotations

import locale as _locale
import os
import sys
from collections.abc import Callable, Mapping

from agent.messages import DEFAULT_LANGUAGE, LANGUAGES

ENV_VAR = "POSPAL_LANGUAGE"
# Windows primary language id of Greek (LANG_GREEK); a LANGID's low 10 bits are its primary language.
_LANG_GREEK = 0x08
_LOCALE_VARS = ("LC_ALL", "LC_MESSAGES", "LANG", "LANGUAGE")


def normalize(value: object) -> str | None:
    """`"el"`/`"en"` for a language tag such as `el`, `el_GR.UTF-8`, `el-GR`, `Greek_Greece`; else None."""
    if not isinstance(value, str) or not value.strip():
        return None
    tag = value.strip().lower().replace("-", "_")
    if tag.startswith("greek"):
        return "el"
    if tag.startswith("english"):
        return "en"
    primary = tag.split("_", 1)[0].split(".", 1)[0].split(":", 1)[0]
    return primary if primary in LANGUAGES else None


def windows_ui_language() -> str | None:
    """The Windows user's UI language (`GetUserDefaultUILanguage`), as "el"/"en", or None elsewhere."""
    if sys.platform != "win32":
        return None
    try:
        import ctypes

        langid = int(ctypes.windll.kernel32.GetUserDefaultUILanguage())
    except Exception:  # no kernel32 (Wine quirks, tests): fall through to the locale
        return None
    return "el" if langid & 0x3FF == _LANG_GREEK else "en"


def locale_language(env: Mapping[str, str] | None = None) -> str | None:
    """The POSIX locale's language (LC_ALL, LC_MESSAGES, LANG, LANGUAGE, then `locale.getlocale()`)."""
    env = os.environ if env is None else env
    for var in _LOCALE_VARS:
        value = env.get(var)
        if value and value not in ("C", "POSIX", "C.UTF-8"):
            return normalize(value)
    try:
        return normalize(_locale.getlocale()[0])
    except ValueError:
        return None


def system_language(
    env: Mapping[str, str] | None = None, windows: Callable[[], str | None] = windows_ui_language
) -> str | None:
    """The system's language: the Windows UI language, else the locale; None when neither says."""
    return windows() or locale_language(env)


def resolve(env_value: str | None, chosen: str | None, system: str | None) -> str:
    """The agent's language: `POSPAL_LANGUAGE`, else the window's choice, else the system's, else English."""
    for candidate in (env_value, chosen, system):
        lang = normalize(candidate)
        if lang is not None:
            return lang
    return DEFAULT_LANGUAGE


def from_env(env: Mapping[str, str] | None = None) -> str | None:
    """`POSPAL_LANGUAGE` when it names a supported language, else None."""
    env = os.environ if env is None else env
    return normalize(env.get(ENV_VAR))
