"""Delimited text (CSV, TSV, whitespace) reading and writing."""

from __future__ import annotations

import csv
import io as _stdio
import itertools
import re
import zlib

import numpy as np

from nmfcli.errors import UnavailableError
from nmfcli.io._common import available_memory, check_memory, fail, human_bytes, shape_text

_SNIFF_LINES = 50
# A field may be a whole line while the delimiter is being sniffed (a 5 x 15000 matrix has
# lines of 150,000 characters); csv's default limit is 131,072.
csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
_DECIMAL_COMMA = re.compile(r"^\s*[+-]?(\d+,\d*|,\d+)([eE][+-]?\d+)?\s*$")
# What other formats start with: text that starts so is a binary file given as CSV.
_BINARY_MAGIC = ((b"\x93NUMPY", "an NPY file", "npy"), (b"PK\x03\x04", "an npz (zip) file", "npz"),
                 (b"\x89HDF\r\n\x1a\n", "an HDF5 file", "h5"))
_DELIMS = ("\t", ";", ",")  # semicolon before comma: semicolon files use decimal commas


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _is_data(cell: str, delim) -> bool:
    """A number, or in a ';'-separated file a number with a decimal comma (refused later with a
    hint, never taken for a column label)."""
    return _is_number(cell) or (delim == ";" and _DECIMAL_COMMA.match(cell) is not None)


def refuse_binary(path: str, head: bytes) -> None:
    """Refuse, from its first bytes, a binary file read as text (NPY on stdin, /dev/zero)."""
    for magic, what, fmt in _BINARY_MAGIC:
        if head.startswith(magic):
            raise fail(path, f"is {what}, not CSV text; give --input-format {fmt}")
    if b"\0" in head:
        at = head.index(b"\0")
        raise fail(path, f"byte {at + 1} is a NUL byte: this is binary data, not CSV text")


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
                raise UnavailableError(f"{path}: decompresses to more than {human_bytes(limit)}; too large to read "
                                       "into memory")
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


_LINE_OVERHEAD = 140  # bytes per line beyond its characters: the str, the (number, line) tuple, the list slot
_BLOCK = 4096  # rows tokenised and converted at a time: strings for one block only, never the whole file


def parse_text(path: str, raw: bytes, *, header, index_col, dtype, ext_hint=None, progress=None):
    """Parse delimited text into (X, row_labels, col_labels).

    Streams: the float matrix is allocated once (its size known from the line count)
    and filled block by block, so memory stays near the text plus the matrix.
    Row labels are detected from the first block of data rows. ``progress(done, total)`` is
    called after each block of rows.
    """
    refuse_binary(path, raw[:1 << 16])
    # The text is held three times while it is split (the bytes, the str, a str per line with
    # its list entry), then the matrix beside it: refuse before, from the size (a 4 MB .csv.gz
    # can inflate to gigabytes).
    text_bytes = 2 * len(raw) + _LINE_OVERHEAD * raw.count(b"\n")
    check_memory(path, f"the text ({human_bytes(len(raw))}, read into lines)", text_bytes)
    text = _decode(path, raw)
    lines = list(_content_lines(text))
    del text
    if not lines:
        raise fail(path, "the file is empty")
    delim = _sniff([ln for _, ln in lines[:_SNIFF_LINES]], ext_hint)
    at = [0]  # index into lines of the line the tokeniser last consumed

    def feed():
        for i, (_, line) in enumerate(lines):
            at[0] = i
            yield line

    if delim is None:
        records = (ln.split() for ln in feed())
    else:
        records = csv.reader(feed(), delimiter=delim)

    def lineno():
        return lines[at[0]][0]

    first = next(records)
    if header is None:
        header = (any(not _is_data(c, delim) for c in first[1:]) if len(first) > 1
                  else not _is_data(first[0], delim))
    head = [c.strip() for c in first] if header else None
    first_block, first_lines = ([] if header else [first]), ([] if header else [lineno()])
    for rec in records:
        first_block.append(rec)
        first_lines.append(lineno())
        if len(first_block) >= _BLOCK:
            break
    if not first_block:
        raise fail(path, "the file has a header row but no data rows")
    ncols_file = len(first_block[0])
    # R's write.csv layout: the header lacks the top-left cell of the row-label column.
    r_layout = bool(header) and len(first) == ncols_file - 1 and index_col is not False
    expected = ncols_file if r_layout or not header else len(first)
    for rec, n_line in zip(first_block, first_lines):
        if len(rec) != expected:
            raise fail(path, f"line {n_line} has {len(rec)} fields, expected {expected}")
    if index_col is None:
        if r_layout or (header and head[0] == "" and expected > 1):
            index_col = True
        else:
            index_col = expected > 1 and all(not _is_number(r[0]) for r in first_block)
    col_labels = None
    if head is not None:
        col_labels = head if (r_layout or not index_col) else head[1:]
    offset = 1 if index_col else 0
    m_max, n = len(lines) - (1 if header else 0), expected - offset
    if n == 0:
        raise fail(path, "no numeric columns (only row labels)")
    check_memory(path, f"the matrix ({shape_text((m_max, n))} {np.dtype(dtype).name})",
                 m_max * n * np.dtype(dtype).itemsize + text_bytes)
    X = np.empty((m_max, n), dtype=dtype)
    row_labels = [] if index_col else None
    done = 0

    def convert(block, block_lines):
        nonlocal done
        if index_col:
            row_labels.extend(r[0].strip() for r in block)
            block = [r[1:] for r in block]
        try:
            values = np.fromiter(map(float, itertools.chain.from_iterable(block)), dtype=np.float64,
                                 count=len(block) * n)
        except ValueError:
            _locate_bad_cell(path, block, block_lines, done, offset, delim)
            raise
        X[done:done + len(block)] = values.reshape(len(block), n)
        done += len(block)
        if progress is not None:
            progress(done, m_max)

    convert(first_block, first_lines)
    del first_block, first_lines
    block, block_lines = [], []
    for rec in records:
        if len(rec) != expected:
            raise fail(path, f"line {lineno()} has {len(rec)} fields, expected {expected}")
        block.append(rec)
        block_lines.append(lineno())
        if len(block) >= _BLOCK:
            convert(block, block_lines)
            block, block_lines = [], []
    if block:
        convert(block, block_lines)
    if done < m_max:  # quoted fields spanning lines made fewer records than lines
        X = X[:done].copy()
    return X, row_labels, col_labels


def _locate_bad_cell(path, body, linenos, first_row, offset, delim):
    for i, row in enumerate(body, first_row):
        for j, cell in enumerate(row):
            try:
                float(cell)
            except ValueError:
                where = f"row {i + 1}, column {j + 1} (line {linenos[i - first_row]}, field {j + 1 + offset})"
                missing_hint = "; write a missing value as nan (nmf fit --missing nan leaves them out)"
                if cell.strip() == "":
                    raise fail(path, f"{where} is empty; nmf needs a number in every cell{missing_hint}") from None
                hint = ""
                if delim == ";" and "," in cell:
                    hint = "; use '.' as the decimal point"
                elif cell.strip().lower() in ("na", "n/a", "null", "none", "?", "-"):
                    hint = missing_hint
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
