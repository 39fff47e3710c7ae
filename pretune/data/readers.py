"""Read labelled tables from CSV, TSV, JSONL/JSON, Parquet and CoNLL files, or a Hub dataset (``hub:``).

Every reader returns a ``Table``: named columns plus, for each row, the line of
the file it came from, so errors can say "file, line, column". Bytes that are
not UTF-8 are reported with their line instead of being replaced silently.
A CoNLL file (one ``token ... tag`` line per token, a blank line between sentences)
becomes one row per sentence whose columns hold lists.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".jsonl": "jsonl", ".json": "json",
           ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet", ".conll": "conll", ".iob": "conll",
           ".bio": "conll"}
DOCSTART = "-DOCSTART-"  # a CoNLL document boundary; the CoNLL-2003 files (eng.train, ...) begin with one


@dataclass
class Table:
    path: str
    columns: dict[str, list[Any]]
    lines: list[int] = field(default_factory=list)  # source line (1-based) of each row; row number for parquet
    line_word: str = "line"
    token_lines: bool = False  # CoNLL: item k of a row's lists stands on line lines[i] + k

    def __len__(self) -> int:
        return len(self.lines)

    def where(self, i: int) -> str:
        return f"{self.path}, {self.line_word} {self.lines[i]}"

    def where_item(self, i: int, k: int) -> str:
        """Where item ``k`` (0-based) of row ``i``'s list values stands: its own line in a CoNLL file."""
        if self.token_lines:
            return f"{self.path}, line {self.lines[i] + k}"
        return f"{self.where(i)}, item {k + 1}"

    def column(self, name: str, role: str, flag: str) -> list[Any]:
        """The column ``name`` or a ``DataError`` listing the columns there are."""
        if name not in self.columns:
            have = ", ".join(repr(c) for c in self.columns) or "none"
            raise DataError(f"{self.path}: no {role} column {name!r} (columns: {have}); "
                            f"choose one with {flag}")
        return self.columns[name]


def detect_format(path: Path) -> str:
    """The format by extension; a file of another extension that begins with ``-DOCSTART-`` is CoNLL."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    fmt = FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None and path.is_file() and _starts_with_docstart(path):
        return "conll"
    if fmt is None:
        raise DataError(f"{path}: unknown data format {path.suffix or '(no extension)'!r}; "
                        f"use one of {', '.join(sorted(set(FORMATS)))} (.conll for CoNLL column files)")
    return fmt


def _starts_with_docstart(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(4096).decode("utf-8-sig", errors="replace")
    except OSError:
        return False
    first = next((line.split() for line in head.splitlines() if line.strip()), [""])
    return first[0] == DOCSTART


def read_table(path: str | Path) -> Table:
    """Read a data file by its extension, or a ``hub:NAME[:CONFIG]:SPLIT`` dataset. Raises ``DataError``."""
    if isinstance(path, str) and path.startswith("hub:"):
        from .hub import read_hub  # imports datasets only for Hub sources

        return read_hub(path)
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: data file not found")
    if p.is_dir():
        raise DataError(f"{p}: is a folder; give a CSV, TSV, JSONL or Parquet file")
    fmt = detect_format(p)
    if fmt == "parquet":
        return _read_parquet(p)
    text = _decode(p)
    if fmt in ("csv", "tsv"):
        table = _read_delimited(p, text, "," if fmt == "csv" else "\t", fmt)
    elif fmt == "jsonl":
        table = _read_jsonl(p, text)
    elif fmt == "conll":
        table = _read_conll(p, text)
    else:
        table = _read_json(p, text)
    if not table.lines:
        raise DataError(f"{p}: no data rows")
    return table


def _decode(p: Path) -> str:
    raw = p.read_bytes()
    if p.suffix.lower() == ".gz":
        import gzip
        raw = gzip.decompress(raw)
    try:
        return raw.decode("utf-8-sig")  # tolerate a byte-order mark (GLUE's MRPC has one)
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{p}, line {line}: bytes {raw[e.start:e.start + 4]!r} are not UTF-8; "
                        f"re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None


def _read_delimited(p: Path, text: str, delimiter: str, fmt: str) -> Table:
    # GLUE-style TSV files carry bare quote characters inside sentences: quotes are data there.
    quoting = csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{p}: file is empty") from None
    header = [h.strip() for h in header]
    cols: dict[str, list[Any]] = {h: [] for h in header}
    lines: list[int] = []
    try:
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if len(row) != len(header):
                raise DataError(f"{p}, line {reader.line_num}: {len(row)} fields, header has "
                                f"{len(header)} ({', '.join(header)}); check the delimiter and quoting")
            for h, v in zip(header, row):
                cols[h].append(v)
            lines.append(reader.line_num)
    except csv.Error as e:
        raise DataError(f"{p}, line {reader.line_num}: malformed {fmt.upper()} ({e})") from None
    return Table(str(p), cols, lines)


def _rows_to_table(p: Path, rows: list[tuple[int, dict]], word: str = "line") -> Table:
    keys: dict[str, None] = {}
    for _, obj in rows:
        keys.update(dict.fromkeys(obj))
    cols = {k: [obj.get(k) for _, obj in rows] for k in keys}
    return Table(str(p), cols, [n for n, _ in rows], word)


def _read_jsonl(p: Path, text: str) -> Table:
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{p}, line {n}: not valid JSON ({e.msg}); one JSON object per line") from None
        if not isinstance(obj, dict):
            raise DataError(f"{p}, line {n}: expected a JSON object, got {type(obj).__name__}")
        rows.append((n, obj))
    return _rows_to_table(p, rows)


def _read_json(p: Path, text: str) -> Table:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{p}, line {e.lineno}: not valid JSON ({e.msg})") from None
    if isinstance(data, dict) and "data" in data:
        data = data["data"]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError(f"{p}: expected a JSON list of objects (or JSONL, one object per line)")
    return _rows_to_table(p, list(enumerate(data, start=1)), "record")


def _read_conll(p: Path, text: str) -> Table:
    """One row per sentence: ``tokens`` (the first column), ``tags`` (the last, when there are two or more) and
    every column by its index (``"0"``, ``"1"``, ...; ``--conll-column N`` picks one as the tags)."""
    rows: list[list[list[str]]] = []  # sentence -> token lines -> fields
    lines: list[int] = []
    width, first = 0, 0
    current: list[list[str]] = []
    for n, line in enumerate(text.splitlines() + [""], start=1):
        fields = line.split()
        if not fields or fields[0] == DOCSTART:  # a blank line or a document boundary ends a sentence
            if current:
                rows.append(current)
                current = []
            continue
        if not width:
            width, first = len(fields), n
        elif len(fields) != width:
            raise DataError(f"{p}, line {n}: {len(fields)} columns, but line {first} has {width}; every token line "
                            "of a CoNLL file needs the same columns (token ... tag, separated by spaces or tabs)")
        if not current:
            lines.append(n)
        current.append(fields)
    cols: dict[str, list[Any]] = {str(j): [[t[j] for t in sent] for sent in rows] for j in range(width)}
    named = {"tokens": cols["0"]} if width else {}
    if width >= 2:
        named["tags"] = cols[str(width - 1)]
    return Table(str(p), {**named, **cols}, lines, token_lines=True)


def _read_parquet(p: Path) -> Table:
    import pyarrow.parquet as pq

    try:
        t = pq.read_table(p)
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise DataError(f"{p}: cannot read as Parquet ({e})") from None
    cols = {name: t.column(name).to_pylist() for name in t.column_names}
    return Table(str(p), cols, list(range(1, t.num_rows + 1)), "row")


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
