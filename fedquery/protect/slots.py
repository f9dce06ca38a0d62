"""Secure-aggregation slots: a site's result as one integer vector, and the decrypted
federation-wide sum back as combined cells.

The layout (:class:`~fedquery.ir.SecureLayout`) is derived by every site from the query and
its policy and signed with its contribution; the key holder decrypts only when every site
signed the same layout (same digest).  Group keys come from public domains only, so which
slots exist never depends on the data; a group a site does not have is all zeros.

>>> from fedquery.ir import SecureLayout, SlotColumn
>>> layout = SecureLayout(("g_0",), (("F",), ("M",), (None,)),
...                       (SlotColumn("p_0"), SlotColumn("__present")), None, "standard", 10**6)
>>> raw = pa.table({"g_0": ["M", "F"], "p_0": [7, 5]})
>>> encode(raw, layout, present="rows")
[5, 7, 0, 1, 1, 0]
>>> decode([9, 8, 0, 2, 1, 0], layout).to_pylist()[0]
{'g_0': 'F', 'c_0': 9, '__present': 2, '__sites': 2, '__suppressed': False}
"""

from __future__ import annotations

import decimal
import hashlib
import json
import logging
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute  # pa.compute

from fedquery.errors import DataError, NotSupportedError
from fedquery.ir import CellChecks, SecureLayout, SlotColumn

log = logging.getLogger(__name__)

PRESENT = "__present"  # per group: 1 if the site contributes to it (summed: sites behind it)
NOT_NULL = "__nn_"  # "__nn_p_i": 1 if the site's sum p_i is not NULL (summed 0: the sum is NULL)


# -- the layout as signed JSON ------------------------------------------------------------------

def layout_to_json(layout: SecureLayout) -> dict:
    checks = layout.checks
    return {
        "group_columns": list(layout.group_columns),
        "groups": [list(g) for g in layout.groups],
        "columns": [[c.name, c.scale, c.decimals] for c in layout.columns],
        "checks": None if checks is None else {
            "min_cell_count": checks.min_cell_count,
            "dominance": [int(checks.dominance[0]), float(checks.dominance[1])]
            if checks.dominance else None,
            "zero_cells_disclosive": checks.zero_cells_disclosive,
            "contributors": list(checks.contributors),
            "dominant": [list(d) for d in checks.dominant]},
        "profile": layout.profile, "bound": int(layout.bound),
        "noise_sigma": float(layout.noise_sigma),
    }


def layout_from_json(obj: dict) -> SecureLayout:
    try:
        checks = obj["checks"]
        return SecureLayout(
            group_columns=tuple(map(str, obj["group_columns"])),
            groups=tuple(tuple(g) for g in obj["groups"]),
            columns=tuple(SlotColumn(str(n), int(s), None if d is None else int(d))
                          for n, s, d in obj["columns"]),
            checks=None if checks is None else CellChecks(
                min_cell_count=int(checks["min_cell_count"]),
                dominance=(int(checks["dominance"][0]), float(checks["dominance"][1]))
                if checks["dominance"] else None,
                zero_cells_disclosive=bool(checks["zero_cells_disclosive"]),
                contributors=tuple(map(str, checks["contributors"])),
                dominant=tuple((str(a), str(b)) for a, b in checks["dominant"])),
            profile=str(obj["profile"]), bound=int(obj["bound"]),
            noise_sigma=float(obj.get("noise_sigma", 0.0)))
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise DataError(f"malformed secure-aggregation layout: {err}") from None


def layout_digest(layout: SecureLayout) -> str:
    """SHA-256 of the layout's canonical JSON: what sites sign and the key holder compares."""
    text = json.dumps(layout_to_json(layout), sort_keys=True, separators=(",", ":"),
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# -- site side ---------------------------------------------------------------------------------

def _slot_value(value, column: SlotColumn) -> int:
    if value is None:
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):  # already a slot value (a sum scaled in SQL when scale > 1)
        return value
    if isinstance(value, decimal.Decimal):
        # DECIMAL(p, s) columns are scaled to integers; a DECIMAL(38, 0) (HUGEINT) sum is
        # already a slot value, like an integer
        scaled = value.scaleb(column.decimals) if column.decimals is not None else value
        if scaled != scaled.to_integral_value():
            raise DataError(f"{column.name}: {value} has more decimals than its slot keeps")
        return int(scaled)
    if isinstance(value, float):
        if column.scale == 1 and column.decimals is None:
            raise NotSupportedError(
                "secure aggregation sums exact integers: a sum of DOUBLE values cannot be "
                "encrypted exactly; CAST the column to DECIMAL(p, s) (or give it bounds and "
                "noise in the policy, which encodes it in fixed point)")
        return int(round(value * column.scale))
    raise DataError(f"{column.name}: a {type(value).__name__} cannot go into a slot")


def encode(raw: pa.Table, layout: SecureLayout, *, present: str) -> list[int]:
    """The site's raw result as slots (aggregate-major; zeros for absent groups).

    ``present`` says how the ``__present`` column is filled: ``"rows"`` — 1 for every group
    the site has a row for (exact mode, where the count of sites behind a cell is part of the
    combined checks), ``"all"`` — 1 everywhere (under noise, where presence must not depend
    on the data)."""
    index = {tuple(g): i for i, g in enumerate(layout.groups)}
    n_groups = len(layout.groups)
    keys = list(zip(*(raw.column(c).to_pylist() for c in layout.group_columns))) if (
        layout.group_columns) else [()] * raw.num_rows
    positions = []
    outside = 0
    for key in keys:
        position = index.get(tuple(key))
        if position is None:
            outside += 1
        positions.append(position)
    if outside:  # a value the steward's domain does not list: it has no slot
        log.warning("secure aggregation: %d result row(s) have a group key outside the "
                    "public domain and are left out", outside)
    slots = [0] * layout.length
    for c, column in enumerate(layout.columns):
        base = c * n_groups
        if column.name.startswith(NOT_NULL):
            source = raw.column(column.name[len(NOT_NULL):]).to_pylist()
            for position, value in zip(positions, source):
                if position is not None and value is not None:
                    slots[base + position] = 1
            continue
        if column.name == PRESENT:
            if present == "all":
                slots[base:base + n_groups] = [1] * n_groups
            else:
                for position in positions:
                    if position is not None:
                        slots[base + position] = 1
            continue
        values = raw.column(column.name).to_pylist()
        for position, value in zip(positions, values):
            if position is not None:
                slots[base + position] += _slot_value(value, column)
    return slots


def check_own_range(slots: Sequence[int], layout: SecureLayout, sites: int) -> None:
    """A site's own share must leave room for every other site's: |slot| ≤ bound / sites."""
    limit = layout.bound // max(sites, 1)
    if any(abs(v) > limit for v in slots):
        raise NotSupportedError(
            "a value of this query is too large for secure aggregation at this site (the "
            "encrypted sum could wrap around); aggregate a narrower range or fewer rows")


# -- key holder side ---------------------------------------------------------------------------

def decode(slots: Sequence[int], layout: SecureLayout, sites: int = 0) -> pa.Table:
    """The decrypted sum as combined cells: group columns, ``c_i`` for each partial
    ``p_i`` (integers, exact decimals or fixed-point values), the check columns, ``__sites``
    (sites behind each cell: the summed ``__present`` column, or ``sites`` everywhere when
    the layout has none — under noise every site reports every group) and ``__suppressed``
    (all False until the checks run)."""
    n_groups = len(layout.groups)
    if len(slots) < layout.length:
        raise DataError(f"the decrypted sum has {len(slots)} slots, the layout "
                        f"{layout.length}")
    arrays, names = [], []
    for i, name in enumerate(layout.group_columns):
        arrays.append(pa.array([g[i] for g in layout.groups]))
        names.append(name)
    for c, column in enumerate(layout.columns):
        values = list(slots[c * n_groups:(c + 1) * n_groups])
        if column.decimals is not None:
            array = pa.array([decimal.Decimal(v).scaleb(-column.decimals) for v in values],
                             pa.decimal128(38, column.decimals))
        elif column.scale != 1:
            array = pa.array([v / column.scale for v in values], pa.float64())
        else:
            array = pa.array(values, pa.int64())
        arrays.append(array)
        names.append("c_" + column.name[2:] if column.name.startswith("p_") else column.name)
    table = pa.table(arrays, names=names)
    for column in layout.columns:  # a sum no site had a value for is NULL
        if column.name.startswith(NOT_NULL):
            target = "c_" + column.name[len(NOT_NULL) + 2:]
            empty = pa.compute.equal(table[column.name], 0)
            index = table.column_names.index(target)
            table = table.set_column(index, target, pa.compute.if_else(
                empty, pa.nulls(n_groups, table[target].type), table[target]))
            table = table.drop_columns([column.name])
    present = table[PRESENT] if PRESENT in names else pa.array([sites] * n_groups, pa.int64())
    table = table.append_column("__sites", present)
    return table.append_column("__suppressed", pa.array([False] * n_groups, pa.bool_()))
