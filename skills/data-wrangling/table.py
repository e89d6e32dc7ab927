"""Summarise a CSV/TSV, JSON-lines or JSON-array file, or query it with SQL (stdlib only).

Usage: table.py FILE [--sql "select ... from t"] [--format csv|jsonl|json] [--limit N] [--csv]
Summary: rows, columns, a type guess per column, min/max/mean for numbers, top values for text.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sqlite3
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DISTINCT_CAP = 10_000
CELL_WIDTH = 40


def as_number(value: str) -> int | float | None:
    """The value as an int or float if it reads as one, else None."""
    text = value.strip()
    if "_" in text or (len(text) > 1 and text[0] == "0" and text.isdigit()):
        return None  # "1_000" and ids such as "007" stay text
    try:
        whole = int(text)
    except ValueError:
        pass
    else:
        return whole if abs(whole) < 2**63 else float(whole)  # SQLite integers are 64-bit
    try:
        number = float(text)
    except ValueError:
        return None
    return number if number == number and abs(number) != float("inf") else None


def cell_text(value: Any) -> str:
    """A JSON value as the text a CSV cell would hold ('' for null)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def detect_format(path: Path, head: str) -> str:
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".ndjson"}:
        return "jsonl"
    stripped = head.lstrip()
    if stripped.startswith("["):
        return "json"
    if stripped.startswith("{"):
        return "jsonl"
    return "csv"


@dataclass
class Table:
    """Columns plus a way to iterate the rows again as lists of cell texts."""

    path: Path
    fmt: str
    columns: list[str] = field(default_factory=list)
    skipped: int = 0
    delimiter: str = ","

    def rows(self) -> Iterator[list[str]]:
        if self.fmt == "csv":
            with self.path.open(newline="", encoding="utf-8-sig", errors="replace") as fh:
                reader = csv.reader(fh, delimiter=self.delimiter)
                next(reader, None)
                width = len(self.columns)
                for row in reader:
                    if row:
                        yield (row + [""] * width)[:width]
            return
        for record in self._records():
            yield [cell_text(record.get(col)) for col in self.columns]

    def _records(self) -> Iterator[dict[str, Any]]:
        self.skipped = 0
        with self.path.open(encoding="utf-8-sig", errors="replace") as fh:
            items: Iterable[Any]
            if self.fmt == "json":
                data = json.load(fh)
                items = data if isinstance(data, list) else [data]
            else:
                items = (_json_or_none(line) for line in fh if line.strip())
            for item in items:
                if isinstance(item, dict):
                    yield item
                else:
                    self.skipped += 1


def _json_or_none(line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def open_table(path: Path, fmt: str | None) -> Table:
    with path.open(encoding="utf-8-sig", errors="replace") as fh:
        head = fh.read(64 * 1024)
    table = Table(path, fmt or detect_format(path, head))
    if table.fmt == "csv":
        if path.suffix.lower() == ".tsv":
            table.delimiter = "\t"
        else:
            header_line = head.split("\n", 1)[0]
            best = max(",;\t|", key=header_line.count)
            table.delimiter = best if header_line.count(best) else ","
        first = next(csv.reader(io.StringIO(head), delimiter=table.delimiter), [])
        table.columns = dedupe([c.strip() or f"col{i + 1}" for i, c in enumerate(first)])
    else:
        seen: dict[str, None] = {}
        for record in table._records():
            seen.update(dict.fromkeys(record))
        table.columns = list(seen)
    return table


def dedupe(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        candidate, n = name, 1
        while candidate in out:
            n += 1
            candidate = f"{name}_{n}"
        out.append(candidate)
    return out


@dataclass
class ColumnStats:
    """Running statistics of one column."""

    filled: int = 0
    ints: int = 0
    floats: int = 0
    total: float = 0.0
    low: float | None = None
    high: float | None = None
    values: Counter[str] = field(default_factory=Counter)
    overflow: bool = False

    def add(self, text: str) -> None:
        if text.strip() == "":
            return
        self.filled += 1
        if text in self.values or len(self.values) < DISTINCT_CAP:
            self.values[text] += 1
        else:
            self.overflow = True
        number = as_number(text)
        if number is None:
            return
        if isinstance(number, int):
            self.ints += 1
        else:
            self.floats += 1
        self.total += number
        self.low = number if self.low is None else min(self.low, number)
        self.high = number if self.high is None else max(self.high, number)

    @property
    def kind(self) -> str:
        if self.filled == 0:
            return "empty"
        if self.ints == self.filled:
            return "int"
        if self.ints + self.floats == self.filled:
            return "float"
        return "text"


def fmt_num(value: float) -> str:
    return f"{value:.6g}"


def profile(table: Table) -> tuple[int, list[ColumnStats]]:
    stats = [ColumnStats() for _ in table.columns]
    count = 0
    for row in table.rows():
        count += 1
        for stat, text in zip(stats, row, strict=True):
            stat.add(text)
    return count, stats


def summary(table: Table, top: int) -> str:
    count, stats = profile(table)
    where = f"delimiter {table.delimiter!r}" if table.fmt == "csv" else table.fmt
    lines = [f"{table.path.name}: {count} rows, {len(table.columns)} columns ({where})"]
    if table.skipped:
        lines.append(f"skipped {table.skipped} lines that were not JSON objects")
    body = [["column", "type", "filled", "distinct", "summary"]]
    for name, stat in zip(table.columns, stats, strict=True):
        distinct = f">{DISTINCT_CAP}" if stat.overflow else str(len(stat.values))
        if stat.kind in {"int", "float"} and stat.low is not None and stat.high is not None:
            mean = stat.total / stat.filled
            info = f"min {fmt_num(stat.low)}  max {fmt_num(stat.high)}  mean {fmt_num(mean)}"
        elif stat.kind == "empty":
            info = ""
        else:
            common = stat.values.most_common(top)
            info = "top: " + ", ".join(f"{clip(v, 24)} ({n})" for v, n in common)
        body.append([name, stat.kind, str(stat.filled), distinct, info])
    return "\n".join([*lines, render(body)])


def clip(text: str, width: int = CELL_WIDTH) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def render(rows: list[list[str]]) -> str:
    widths = [max(len(clip(r[i])) for r in rows) for i in range(len(rows[0]))]
    out = []
    for row in rows:
        cells = [clip(c).ljust(w) for c, w in zip(row, widths, strict=True)]
        out.append("  ".join([*cells[:-1], clip(row[-1], 200)]).rstrip())
    return "\n".join(out)


def load_sqlite(table: Table) -> sqlite3.Connection:
    """Load the rows into in-memory SQLite table `t`; numeric columns get numeric values."""
    _, stats = profile(table)
    kinds = [s.kind for s in stats]
    decl = {"int": "INTEGER", "float": "REAL"}
    cols = ", ".join(
        f'"{c.replace(chr(34), chr(34) * 2)}" {decl.get(k, "TEXT")}'
        for c, k in zip(table.columns, kinds, strict=True)
    )
    db = sqlite3.connect(":memory:")
    db.execute(f"CREATE TABLE t ({cols})")

    def typed(row: list[str]) -> list[Any]:
        out: list[Any] = []
        for text, kind in zip(row, kinds, strict=True):
            if text.strip() == "":
                out.append(None)
            elif kind in {"int", "float"}:
                out.append(as_number(text))
            else:
                out.append(text)
        return out

    marks = ", ".join("?" * len(table.columns))
    insert = f"INSERT INTO t VALUES ({marks})"  # values go through "?" placeholders
    db.executemany(insert, (typed(r) for r in table.rows()))
    return db


def query(table: Table, sql: str, limit: int, as_csv: bool) -> str:
    db = load_sqlite(table)
    cursor = db.execute(sql)
    header = [d[0] for d in cursor.description or []]
    rows = cursor.fetchmany(limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    if as_csv:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        return buf.getvalue().rstrip("\n")
    shown = [header] + [["" if v is None else str(v) for v in r] for r in rows]
    text = render(shown) if header else "(no result set)"
    return text + (f"\n… more than {limit} rows; raise --limit" if more else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--sql", help='an SQLite query over table "t"')
    parser.add_argument("--format", choices=["csv", "jsonl", "json"], help="default: guessed")
    parser.add_argument("--limit", type=int, default=200, help="max rows printed for --sql")
    parser.add_argument("--top", type=int, default=3, help="top values shown per text column")
    parser.add_argument("--csv", action="store_true", help="print --sql results as CSV")
    args = parser.parse_args(argv)
    try:
        table = open_table(args.file, args.format)
        if not table.columns:
            print(f"{args.file}: no columns found", file=sys.stderr)
            return 1
        if args.sql:
            print(query(table, args.sql, args.limit, args.csv))
        else:
            print(summary(table, args.top))
    except (OSError, json.JSONDecodeError, sqlite3.Error, csv.Error) as exc:
        print(f"table.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
