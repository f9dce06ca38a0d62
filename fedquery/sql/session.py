"""Session statements: ``SET epsilon = 0.5``, ``SET delta = 1e-7``, ``RESET epsilon``,
``RESET ALL``.  They change the settings sent with every later query of the session; they are
never sent to a site as SQL.

>>> apply_session_statement("SET epsilon = 0.5", Settings()).get("epsilon")
0.5
>>> apply_session_statement("RESET ALL", Settings((("epsilon", 0.5),))).values
()
>>> apply_session_statement("SELECT 1", Settings()) is None
True
"""

from __future__ import annotations

import re

from fedquery.errors import ProgrammingError
from fedquery.ir import Settings

# name → (type, check, what it means)
SETTINGS = {
    "epsilon": (float, lambda v: v > 0, "privacy loss ε one query may spend at each site"),
    "delta": (float, lambda v: 0 < v < 1, "δ for the gaussian mechanism, 0 < δ < 1"),
    "max_rows_per_unit": (int, lambda v: v >= 1,
                          "a whole number ≥ 1: under differential privacy, count at most this "
                          "many rows per privacy unit from each table — below the policy's "
                          "cap, less noise but rows beyond it are left out"),
}

_SET = re.compile(r"^\s*SET\s+(?:SESSION\s+)?([A-Za-z_]\w*)\s*(?:=|\s+TO\s+)\s*(.+?)\s*;?\s*$",
                  re.I | re.S)
_RESET = re.compile(r"^\s*RESET\s+([A-Za-z_]\w*)\s*;?\s*$", re.I)


def _value(name: str, text: str):
    kind, check, meaning = SETTINGS[name]
    try:
        value = kind(text.strip().strip("'\""))
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise ProgrammingError(f"SET {name}: {text!r} is not {what} ({meaning})") from None
    if not check(value):
        raise ProgrammingError(f"SET {name}: {value!r} is out of range ({meaning})")
    return value


def _known(name: str) -> str:
    lowered = name.lower()
    if lowered not in SETTINGS:
        raise ProgrammingError(f"unknown setting {name!r}; settings: {', '.join(SETTINGS)}")
    return lowered


def apply_session_statement(sql: str, settings: Settings) -> Settings | None:
    """The new settings if ``sql`` is a SET or RESET statement, else None."""
    if (match := _SET.match(sql)) is not None:
        name = _known(match.group(1))
        values = dict(settings.values)
        values[name] = _value(name, match.group(2))
        return Settings(tuple(sorted(values.items())))
    if (match := _RESET.match(sql)) is not None:
        if match.group(1).lower() == "all":
            return Settings()
        name = _known(match.group(1))
        return Settings(tuple((k, v) for k, v in settings.values if k != name))
    return None
