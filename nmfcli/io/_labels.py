"""Label files: one label a line (a vocabulary saved from scikit-learn's get_feature_names_out())."""

from __future__ import annotations

import os

from nmfcli.errors import MissingInputError
from nmfcli.io._common import available_memory, fail, require_file
from nmfcli.io._text import _decode


def read_labels(path) -> list[str]:
    """The labels in a text file, one a line (UTF-8; a final newline, CR-LF endings and a BOM
    are allowed; an empty line is an empty label only between others).

    Raises MissingInputError (no such file, exit 66) or DataError (empty, not UTF-8, exit 65).
    """
    path = os.fspath(path)
    require_file(path)
    if os.path.isdir(path):
        raise MissingInputError(f"{path}: is a folder, not a file")
    try:
        with open(path, "rb") as f:
            raw = f.read(available_memory() // 4 + 1)
    except OSError as e:
        raise MissingInputError(f"{path}: cannot be opened ({e.strerror or e})") from None
    text = _decode(path, raw)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last label; it does not start another
    labels = [line[:-1] if line.endswith("\r") else line for line in lines]
    if not labels:
        raise fail(path, "the label file is empty; it needs one label a line")
    return labels


def write_labels(path, labels, *, force: bool = False) -> None:
    """Write labels one a line (UTF-8), atomically: the file :func:`read_labels` reads back.
    A label with a line break in it cannot be written so (ValueError)."""
    from nmfcli.io._common import atomic_path

    text = [str(label) for label in labels]
    if any("\n" in label or "\r" in label for label in text):
        raise ValueError("a label holds a line break; it cannot be written one a line")
    with atomic_path(os.fspath(path), force=force) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write("".join(f"{label}\n" for label in text))
