"""Remembered results of slow functions of one text value, kept in the warehouse.

Parsing a phone number with phonenumbers costs about 25 µs, and splitting a company name
or checking a USCC a few more; a customer file of 100,000 customers holds over half a
million phone numbers. The customer files change little from one day (or quarter) to the
next, so each result is remembered in ``memo_values`` (kind, version, value, result) and
computed again only for values not seen before.

``kind`` names the function and its parameters (e.g. ``valid_phone CN``); ``version`` is
:func:`code_version`: a digest of the source of the module that holds its rules, and the
versions of the libraries it relies on. Any change to either computes the results afresh,
and the old version's rows are deleted. Results are what the function returns for the
value alone, so a remembered result is the result.

Values that runs stop looking up (a phone number corrected, a customer gone) go when a run
finds more than :data:`PRUNE_SHARE` of the remembered ones unused: the kind is then written
afresh with only the values that run used, so the table follows the customer files instead
of growing with their history. Values longer than :data:`MAX_VALUE_CHARS`, or that the
warehouse cannot store exactly (NUL, text that is not UTF-8), are computed every time and
never written. Without an engine a memo is the plain "each distinct value once" cache.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections.abc import Callable, Iterable, Sequence
from importlib.metadata import version as installed_version
from pathlib import Path
from types import ModuleType
from typing import Any, Generic, TypeVar

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

TABLE = "memo_values"
MAX_VALUE_CHARS = 200
# Rewrite a kind when more than this share of its remembered values (and more than
# PRUNE_AT_LEAST of them) went unused in a run.
PRUNE_SHARE = 0.5
PRUNE_AT_LEAST = 1_000
T = TypeVar("T")


def code_version(module: ModuleType | Sequence[ModuleType], libraries: Iterable[str] = ()) -> str:
    """A version of the rules in ``module`` (or modules): a digest of the source, then each
    library's installed version (``rules 3f2a9c01d4e5 phonenumbers 9.0.43``)."""
    modules = [module] if isinstance(module, ModuleType) else list(module)
    source = b"".join(Path(inspect.getsourcefile(m) or "").read_bytes() for m in modules)
    parts = [f"rules {hashlib.sha256(source).hexdigest()[:12]}"]
    parts += [f"{name} {installed_version(name)}" for name in libraries]
    return " ".join(parts)


def _storable(value: str) -> bool:
    if len(value) > MAX_VALUE_CHARS or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, from text that was not UTF-8
        return False
    return True


def _identity(value: Any) -> Any:
    return value


class Memo(Generic[T]):
    """``function(value)`` for many values, each distinct value computed once and the
    results remembered in the warehouse for the next run.

    ``encode`` turns a result into text (or None) for the table; ``decode`` turns a list of
    them back into results, all at once (JSON is parsed fastest as one array). Both default
    to the identity (results that are text or None). Without an engine the
    memo lives only as long as the object.
    """

    def __init__(
        self,
        engine: Engine | None,
        kind: str,
        version: str,
        function: Callable[[str | None], T],
        encode: Callable[[T], str | None] = _identity,
        decode: Callable[[list[str | None]], list[T]] = _identity,
    ) -> None:
        self.engine, self.kind, self.version, self.function = engine, kind, version, function
        self.encode, self.decode = encode, decode
        self._known: dict[str | None, T] = {}
        self._loaded = 0  # values read from the warehouse
        self._used: set[str | None] = set()  # values looked up that were known
        self._new: dict[str, str | None] = {}
        self.hits = self.misses = 0
        if engine is not None:
            self._load()

    def _load(self) -> None:
        from pipeline import warehouse

        if not warehouse.table_exists(self.engine, TABLE):
            return
        rows = warehouse.read_query(
            self.engine,
            f'SELECT "value", "result" FROM "{TABLE}" '
            'WHERE "kind" = %(kind)s AND "version" = %(version)s',
            {"kind": self.kind, "version": self.version},
        )
        values = rows["value"].to_numpy(dtype=object).tolist()
        results = rows["result"].to_numpy(dtype=object)
        results = [r if isinstance(r, str) else None for r in results]
        self._loaded = len(values)
        self._known = dict(zip(values, self.decode(results), strict=True))

    def map(self, values: Iterable[object]) -> list[T]:
        """The function's result for each value (anything but text counts as None)."""
        known, used, out = self._known, self._used, []
        for value in values:
            key = value if isinstance(value, str) else None
            try:
                out.append(known[key])
                used.add(key)
                self.hits += 1
            except KeyError:
                result = known[key] = self.function(key)
                self.misses += 1
                if self.engine is not None and key is not None and _storable(key):
                    self._new[key] = self.encode(result)
                out.append(result)
        return out

    def save(self) -> int:
        """Write the results computed since loading; the number of rows written. The old
        versions' rows of the same kind go at the same time, and so do the values this
        memo did not use when they are more than :data:`PRUNE_SHARE` of those loaded."""
        from pipeline import warehouse

        unused = self._loaded - len(self._used - self._new.keys() - {None})
        prune = unused > max(PRUNE_AT_LEAST, PRUNE_SHARE * self._loaded)
        rows = self._new
        if prune:
            kept = {
                value: self.encode(self._known[value])
                for value in self._used - self._new.keys()
                if value is not None and _storable(value)
            }
            rows = {**kept, **self._new}
        if self.engine is None or not (self._new or prune):
            return 0
        frame = pd.DataFrame(
            {
                "kind": self.kind,
                "version": self.version,
                "value": pd.Series(list(rows), dtype=object),
                "result": pd.Series(list(rows.values()), dtype=object),
            }
        )
        stale = "" if prune else ' AND "version" <> :version'
        with self.engine.begin() as conn:
            if sa.inspect(conn).has_table(TABLE):
                conn.execute(
                    sa.text(f'DELETE FROM "{TABLE}" WHERE "kind" = :kind{stale}'),
                    {"kind": self.kind, "version": self.version},
                )
            written = warehouse.insert_frame(conn, TABLE, frame)
        log.info(
            "%s (%s): %s values remembered, %s computed, %s rows written%s",
            self.kind,
            self.version,
            self.hits,
            self.misses,
            written,
            f" (rewritten without {unused} unused values)" if prune else "",
        )
        self._loaded = (len(kept) if prune else self._loaded) + len(self._new)
        self._used = set()
        self._new = {}
        return written
