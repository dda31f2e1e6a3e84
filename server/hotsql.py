"""Hot-path statements run on the driver's cursor: SQLAlchemy compiles them and converts values, once.

The refresh queues (`server.refresh_reads`, `server.refresh_writes`) run a few fixed statements
thousands of times a second. Through Core, each call costs several times the driver's own work (an
execution context, parameter processing, result metadata, `Row` objects). `HotStatement` compiles a
Core statement once per dialect (and per size of its one expanding `IN` list), keeps the bind and
result processors SQLAlchemy itself would apply, so values are stored and read exactly as through
Core, and runs the SQL on the DBAPI connection behind a SQLAlchemy `Connection`, inside whatever
transaction that connection is in.

The SQL goes through `Connection._cursor_execute`, SQLAlchemy's own path for statements it did not
compile itself: cursor events and echo logging see it, and driver errors arrive as the same
`sqlalchemy.exc` classes (`OperationalError`, `DataError`, `IntegrityError`), with a dead connection
invalidated as usual (the pool is discarded after a database restart).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement

Processor = Callable[[Any], Any] | None


def _postcompile_token(name: str) -> str:
    return f"(__[POSTCOMPILE_{name}])"


class _Plan:
    """One statement compiled for one dialect: SQL text(s), parameter order and value processors."""

    def __init__(self, statement: ClauseElement, dialect: Dialect, expanding: str | None) -> None:
        compiled: Any = statement.compile(dialect=dialect)  # an SQLCompiler (its binds, positiontup)
        self.template = compiled.string
        self.positional = bool(dialect.positional)
        self.names: Sequence[str] = list(compiled.positiontup or ()) if self.positional else []
        self.expanding = expanding
        if expanding is not None and _postcompile_token(expanding) not in self.template:
            raise ValueError(f"{expanding} is not an expanding parameter of this statement")
        self.binds: dict[str, Processor] = {
            name: bind.type._cached_bind_processor(dialect) for name, bind in compiled.binds.items()
        }
        # Values given in the statement itself (`.values(x=1)`): used when `params` does not name them.
        self.defaults = {
            name: bind.effective_value for name, bind in compiled.binds.items() if not bind.required
        }
        # A one-row INSERT's `(?, ?, ?)`, which `HotStatement.inserted` repeats once per row.
        group = "(" + ", ".join("?" * len(self.names)) + ")"
        self.values_group = group if self.positional and f"VALUES {group}" in self.template else None
        # A SELECT's columns, or an INSERT's RETURNING columns (a `text()` has none).
        columns = getattr(statement, "exported_columns", None) or []
        processors = [column.type._cached_result_processor(dialect, None) for column in columns]
        # Only the columns that need converting are touched per row.
        self.converters = [(i, p) for i, p in enumerate(processors) if p is not None]
        self._texts: dict[int, str] = {}

    def text_for(self, size: int) -> str:
        """The SQL with the expanding list rendered for `size` values (qmark dialects)."""
        text = self._texts.get(size)
        if text is None:
            assert self.expanding is not None
            text = self.template.replace(
                _postcompile_token(self.expanding), "(" + ", ".join("?" * size) + ")"
            )
            self._texts[size] = text
        return text


class HotStatement:
    """A Core statement run on the driver (see the module docstring).

    `expanding` names its one `bindparam(..., expanding=True)` list, if any; its values are passed as
    a sequence. Dialects that take named parameters (psycopg) get the parameters as a dict.
    """

    def __init__(self, statement: ClauseElement, *, expanding: str | None = None) -> None:
        self.statement: Any = statement
        self.expanding = expanding
        self._plans: dict[str, _Plan] = {}

    def plan(self, dialect: Dialect) -> _Plan:
        """The statement compiled for `dialect` (once)."""
        plan = self._plans.get(dialect.name)
        if plan is None:
            plan = self._plans[dialect.name] = _Plan(self.statement, dialect, self.expanding)
        return plan

    def rows(self, connection: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run the statement with `params`; its result rows (converted as Core would), or [] if none."""
        plan = self.plan(connection.dialect)
        if plan.expanding is not None and not plan.positional:
            # Named-parameter dialects expand lists in their own way: Core does it (off the hot path:
            # PostgreSQL's hot statements take arrays instead).
            result = connection.execute(self.statement, params)
            return [tuple(row) for row in result] if result.returns_rows else []
        sql, args = self._bound(plan, params)
        return self._converted(plan, run(connection, sql, args))

    @staticmethod
    def _converted(plan: _Plan, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        converters = plan.converters
        if not converters or not rows:
            return rows
        out = []
        for row in rows:
            values = list(row)
            for i, convert in converters:
                value = values[i]
                # NULL stays None (every processor of this schema's types maps None to None): most of a
                # state row's dates are NULL, and this skips their processors.
                if value is not None:
                    values[i] = convert(value)
            out.append(tuple(values))
        return out

    def inserted(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        """Run a one-row `INSERT ... VALUES (...)` as one statement for all `rows` (qmark dialects only).

        Returns what its RETURNING clause gives, converted. Callers keep `rows` within the driver's
        parameter limit (SQLite's is 32766).
        """
        plan = self.plan(connection.dialect)
        if not plan.positional or plan.values_group is None:
            raise ValueError("inserted() takes a one-row INSERT on a qmark dialect")
        args: list[Any] = []
        for params in rows:
            args.extend(self._bound(plan, params)[1])
        sql = plan.template.replace(plan.values_group, ", ".join([plan.values_group] * len(rows)), 1)
        return self._converted(plan, run(connection, sql, args))

    def _bound(self, plan: _Plan, params: Mapping[str, Any]) -> tuple[str, Any]:
        binds = plan.binds
        if not plan.positional:
            named = {}
            for name, value in {**plan.defaults, **params}.items():
                convert = binds.get(name)
                named[name] = value if convert is None else convert(value)
            return plan.template, named
        args: list[Any] = []
        sql = plan.template
        for name in plan.names:
            value = params[name] if name in params else plan.defaults[name]
            convert = binds.get(name)
            if name == plan.expanding:
                values = list(value)
                args.extend(values if convert is None else [convert(v) for v in values])
                sql = plan.text_for(len(values))
            else:
                args.append(value if convert is None else convert(value))
        return sql, args


def run(connection: Connection, sql: str, args: Any) -> list[tuple[Any, ...]]:
    """Execute `sql` on a cursor of the connection's driver connection; the rows as the driver gives them.

    Through `Connection._cursor_execute`, SQLAlchemy's path for statements it did not compile itself:
    cursor events and echo logging still see the statement, and driver errors are handled as usual.
    """
    cursor = connection.connection.cursor()
    try:
        connection._cursor_execute(cursor, sql, args)
        try:
            return list(cursor.fetchall()) if cursor.description is not None else []
        except connection.dialect.loaded_dbapi.Error as exc:
            connection._handle_dbapi_exception(exc, sql, args, cursor, None)
    finally:
        cursor.close()
