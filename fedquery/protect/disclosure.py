"""Statistical disclosure control on result cells: small cells and dominance.

A cell that fails a check is *suppressed and flagged*: its values are withheld (NULL), a
``__suppressed`` flag is set, and only the number of suppressed cells is reported — never
why a particular cell failed or what its count was.

- ``protect_site_cells`` runs at a site on its own partials (plain aggregation): a cell is
  suppressed when some aggregate has between 1 and ``min_cell_count - 1`` contributing units
  (or 0 when zero cells are disclosive), or when the ``n`` largest units hold more than
  ``k`` % of a sum.  The check columns are dropped before anything leaves the site.
- ``protect_combined_cells`` runs on the combined cells: a cell is suppressed when any site
  suppressed it (a partial total must not be released as the total) or when fewer than
  ``min_sites`` sites contributed.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from fedquery.ir import CellChecks

SUPPRESSED = "__suppressed"
SITES = "__sites"
UNITS = "__units"  # per cell: units behind its least-populated aggregate (NULL: not counted)
UNITS_REPORTED = "__units_reported"  # how many sites reported UNITS for the cell


def _null_where(column: pa.ChunkedArray | pa.Array, mask: pa.Array) -> pa.Array:
    return pc.if_else(mask, pa.nulls(len(mask), type=column.type), column)


def _small_cells(table: pa.Table, checks: CellChecks) -> pa.Array:
    mask = pa.array([False] * table.num_rows, pa.bool_())
    for name in checks.contributors:
        n = pc.fill_null(table[name], 0)
        small = pc.and_(pc.greater(n, 0), pc.less(n, checks.min_cell_count))
        if checks.zero_cells_disclosive:
            small = pc.or_(small, pc.equal(n, 0))
        mask = pc.or_(mask, small)
        mask = pc.or_(mask, pc.is_null(table[name]))  # no check row: fail closed
    return mask


def _dominated(table: pa.Table, checks: CellChecks) -> pa.Array:
    mask = pa.array([False] * table.num_rows, pa.bool_())
    if checks.dominance is None:
        return mask
    share = checks.dominance[1] / 100.0
    for top, total in checks.dominant:
        top_v = pc.cast(pc.fill_null(table[top], 0), pa.float64())
        total_v = pc.cast(pc.fill_null(table[total], 0), pa.float64())
        mask = pc.or_(mask, pc.and_(pc.greater(total_v, 0),
                                    pc.greater(top_v, pc.multiply(total_v, share))))
    return mask


def protect_site_cells(table: pa.Table, group_columns: tuple[str, ...],
                       partial_columns: tuple[str, ...],
                       checks: CellChecks | None) -> tuple[pa.Table, int]:
    """The site's partials with failing cells withheld, plus how many were suppressed.

    Alongside the partials the site reports, per released cell, the number of units behind
    its least-populated aggregate (already at least the site's minimum cell), so that the
    combined cell can be held to the federation's strictest minimum too."""
    if checks is None:
        flags = pa.array([False] * table.num_rows, pa.bool_())
        units = pa.nulls(table.num_rows, pa.int64())
    else:
        flags = pc.or_(_small_cells(table, checks), _dominated(table, checks))
        # Zero counts are not small cells (the site suppressed them if zeros are disclosive).
        counts = [pc.if_else(pc.equal(c, 0), pa.scalar(None, pa.int64()), c)
                  for c in (pc.cast(table[n], pa.int64()) for n in checks.contributors)]
        units = pc.min_element_wise(*counts) if len(counts) > 1 else counts[0]
        units = _null_where(pc.fill_null(units, 0), flags)
    columns = [table[g] for g in group_columns]
    columns += [_null_where(table[p], flags) for p in partial_columns]
    out = pa.table(columns + [units, flags],
                   names=[*group_columns, *partial_columns, UNITS, SUPPRESSED])
    return out, int(pc.sum(pc.cast(flags, pa.int64())).as_py() or 0)


def protect_combined_cells(combined: pa.Table, min_sites: int,
                           min_cell_count: int = 1) -> tuple[pa.Table, int]:
    """Combined cells with site-suppressed, too-few-sites and (where every contributing site
    counted its units) too-small combined cells withheld."""
    flags = pc.or_(pc.fill_null(combined[SUPPRESSED], True),
                   pc.less(combined[SITES], min_sites))
    counted = pc.equal(combined[UNITS_REPORTED], combined[SITES])
    units = pc.fill_null(combined[UNITS], 0)
    small = pc.and_(counted, pc.and_(pc.greater(units, 0), pc.less(units, min_cell_count)))
    flags = pc.or_(flags, pc.fill_null(small, False))
    return _withhold(combined, flags)


def _withhold(combined: pa.Table, flags: pa.Array,
              drop: frozenset[str] = frozenset()) -> tuple[pa.Table, int]:
    """``combined`` with the ``c_*`` values of flagged cells withheld, ``__suppressed`` set to
    the flags and the ``drop`` columns left out; and how many cells were suppressed."""
    names = [n for n in combined.column_names if n not in drop]
    columns = [_null_where(combined[n], flags) if n.startswith("c_")
               else flags if n == SUPPRESSED else combined[n] for n in names]
    return (pa.table(columns, names=names),
            int(pc.sum(pc.cast(flags, pa.int64())).as_py() or 0))


def protect_secure_cells(combined: pa.Table, checks: CellChecks | None,
                         min_sites: int) -> tuple[pa.Table, int]:
    """The key holder's checks on a decrypted federation-wide sum (secure aggregation): the
    summed unit counts against the minimum cell (so small sites lose less than in plain
    mode, where each site checks its own cells), the summed top contributions against the
    dominance rule (a sum of every site's top ``n`` bounds the federation's top ``n`` from
    above, so the check is conservative), and the sites behind a cell against
    ``min_sites``.  The check columns are dropped; what remains has the shape of plain
    combined cells (``__units`` unset: the combined minimum was applied here)."""
    flags = pc.less(combined[SITES], min_sites)
    if checks is not None:
        flags = pc.or_(flags, pc.or_(_small_cells(combined, checks),
                                     _dominated(combined, checks)))
    drop = {"__present"}
    if checks is not None:
        drop |= set(checks.contributors) | {c for pair in checks.dominant for c in pair}
    out, suppressed = _withhold(combined, flags, frozenset(drop))
    out = out.append_column(UNITS, pa.nulls(out.num_rows, pa.int64()))
    return out.append_column(UNITS_REPORTED, pa.array([0] * out.num_rows, pa.int64())), \
        suppressed
