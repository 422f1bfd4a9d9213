"""Delimited text (CSV, TSV, whitespace) reading and writing."""

from __future__ import annotations

import csv
import gzip
import io as _stdio
import itertools
import zlib

import numpy as np

from nmfcli.io._common import available_memory, check_memory, fail, human_bytes, shape_text

_SNIFF_LINES = 50
_DELIMS = ("\t", ";", ",")  # semicolon before comma: semicolon files use decimal commas


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def decompress(path: str, raw: bytes) -> bytes:
    """Gunzip with a ceiling, so a small gzip bomb is refused instead of exhausting memory."""
    limit = available_memory() // 4
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = []
    total = 0
    try:
        data = raw
        while data:
            chunk = d.decompress(data, 1 << 24)
            total += len(chunk)
            if total > limit:
                raise fail(path, f"decompresses to more than {human_bytes(limit)}; too large to read into memory")
            out.append(chunk)
            data = d.unconsumed_tail
            if d.eof:
                data = d.unused_data  # a concatenated gzip member
                if data:
                    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        if not d.eof:
            raise fail(path, "the gzip stream is truncated")
    except zlib.error:
        raise fail(path, "not a valid gzip file, or it is corrupt") from None
    return b"".join(out)


def _decode(path: str, raw: bytes) -> str:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        start = e.start
        line = raw.count(b"\n", 0, start) + 1
        col = start - (raw.rfind(b"\n", 0, start) + 1) + 1
        raise fail(
            path, f"line {line}, byte {col}: 0x{raw[start]:02x} is not valid UTF-8; save the file as UTF-8"
        ) from None


def _content_lines(text: str):
    """(line number, line) of every line that is neither blank nor a '#' comment."""
    for lineno, line in enumerate(text.splitlines(), 1):
        # Only spaces may precede a comment's '#': a tab is a delimiter before an empty cell.
        if line.strip() and not line.lstrip(" ").startswith("#"):
            yield lineno, line


def _sniff(sample: list[str], hint: str | None) -> str | None:
    """The delimiter giving the same number (>1) of fields on every sampled line; None = whitespace."""
    order = _DELIMS if hint != "," else (",", "\t", ";")
    consistent = []
    for d in order:
        counts = {len(r) for r in csv.reader(sample, delimiter=d)}
        if len(counts) == 1 and counts.pop() > 1:
            consistent.append(d)
    if consistent:
        return consistent[0]
    counts = {len(line.split()) for line in sample}
    if len(counts) == 1 and counts.pop() > 1:
        return None
    # Ragged: pick the most frequent delimiter on the first line, so the error names a line.
    best = max(order, key=lambda d: sample[0].count(d))
    if sample[0].count(best) == 0 and len(sample[0].split()) > 1:
        return None
    return best


def parse_text(path: str, raw: bytes, *, header, index_col, dtype, ext_hint=None):
    """Parse delimited text into (X, row_labels, col_labels)."""
    text = _decode(path, raw)
    lines = list(_content_lines(text))
    if not lines:
        raise fail(path, "the file is empty")
    delim = _sniff([ln for _, ln in lines[:_SNIFF_LINES]], ext_hint)
    linenos = [n for n, _ in lines]
    if delim is None:
        records = [ln.split() for _, ln in lines]
    else:
        # One physical line per record: quoted fields with newlines are not matrix data.
        records = list(csv.reader((ln for _, ln in lines), delimiter=delim))
    del lines

    first = records[0]
    if header is None:
        header = any(not _is_number(c) for c in first[1:]) if len(first) > 1 else not _is_number(first[0])
    col_labels = None
    body_start = 1 if header else 0
    if header and len(records) == 1:
        raise fail(path, "the file has a header row but no data rows")
    ncols_file = len(records[body_start])
    head = [c.strip() for c in first] if header else None
    # R's write.csv layout: the header lacks the top-left cell of the row-label column.
    r_layout = header and len(first) == ncols_file - 1 and index_col is not False
    expected = ncols_file if r_layout or not header else len(first)
    for i in range(body_start, len(records)):
        if len(records[i]) != expected:
            raise fail(path, f"line {linenos[i]} has {len(records[i])} fields, expected {expected}")
    if index_col is None:
        if r_layout or (header and head[0] == "" and expected > 1):
            index_col = True
        else:
            index_col = expected > 1 and all(not _is_number(r[0]) for r in records[body_start:])
    row_labels = None
    body = records[body_start:]
    if index_col:
        row_labels = [r[0].strip() for r in body]
        body = [r[1:] for r in body]
        if head is not None:
            col_labels = head if r_layout else head[1:]
    elif head is not None:
        col_labels = head
    m, n = len(body), expected - (1 if index_col else 0)
    if n == 0:
        raise fail(path, "no numeric columns (only row labels)")
    check_memory(path, f"the matrix ({shape_text((m, n))} {np.dtype(dtype).name})", m * n * np.dtype(dtype).itemsize)
    try:
        X = np.fromiter(map(float, itertools.chain.from_iterable(body)), dtype=np.float64, count=m * n)
    except ValueError:
        _locate_bad_cell(path, body, linenos[body_start:], 1 if index_col else 0, delim)
        raise
    X = X.reshape(m, n)
    if X.dtype != dtype:
        X = X.astype(dtype)
    return X, row_labels, col_labels


def _locate_bad_cell(path, body, linenos, offset, delim):
    for i, row in enumerate(body):
        for j, cell in enumerate(row):
            try:
                float(cell)
            except ValueError:
                where = f"row {i + 1}, column {j + 1} (line {linenos[i]}, field {j + 1 + offset})"
                if cell.strip() == "":
                    raise fail(path, f"{where} is empty; nmf needs a number in every cell") from None
                hint = ""
                if delim == ";" and "," in cell:
                    hint = "; use '.' as the decimal point"
                raise fail(path, f"{where}: {cell.strip()!r} is not a number{hint}") from None


def _fmt_rows(A, delimiter):
    """Lines of formatted numbers: shortest round-trip repr for float64, %.9g for float32."""
    A = np.asarray(A)
    if A.dtype.kind in "iub":
        fmt = str
    elif A.dtype == np.float32:
        fmt = "%.9g".__mod__
    else:
        A = A.astype(np.float64, copy=False)
        fmt = repr
    return (delimiter.join(map(fmt, row)) for row in A.tolist())


def write_text(stream, A, row_labels, col_labels, delimiter=","):
    """Write A as delimited text to an open text stream (labels quoted as needed)."""
    cells = _stdio.StringIO()
    quoter = csv.writer(cells, delimiter=delimiter, lineterminator="")

    quote_all = csv.writer(cells, delimiter=delimiter, lineterminator="", quoting=csv.QUOTE_ALL)

    def quoted(values):
        cells.seek(0)
        cells.truncate()
        # A line starting with '#' would read back as a comment: quote it.
        (quote_all if values and values[0].lstrip().startswith("#") else quoter).writerow(values)
        return cells.getvalue()

    if col_labels is not None:
        stream.write(quoted(([""] if row_labels is not None else []) + [str(c) for c in col_labels]) + "\n")
    lines = _fmt_rows(A, delimiter)
    if row_labels is None:
        for line in lines:
            stream.write(line + "\n")
    else:
        for label, line in zip(row_labels, lines):
            stream.write(quoted([str(label)]) + delimiter + line + "\n")
