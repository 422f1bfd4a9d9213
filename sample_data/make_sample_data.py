"""Build the files in sample_data/ from real data that ships with Python and scikit-learn.

Run from the repository root:

    .venv/bin/python sample_data/make_sample_data.py

Nothing is downloaded. The output is deterministic: running the script twice writes
byte-identical CSV and .npy files (the HDF5 file holds identical data; its header may
differ only in timestamps, which we switch off with ``track_times=False``).

Files written (see sample_data/README.md for the provenance of each):

* pydoc_topics.csv        TF-IDF document-term matrix of Python's 79 help topics
* digits.h5               scikit-learn's 1797 handwritten 8x8 digit images
* pluck_spectrogram.npy   magnitude spectrogram (frames x frequencies) of CPython's
                          test recording Lib/test/audiodata/pluck-pcm16.wav
* pluck_basis.npy         fixed basis of harmonic spectral templates (k x frequencies)

Only numpy, scipy and h5py are needed, except for digits.h5, which needs scikit-learn
(the images ship inside it).
"""

from __future__ import annotations

import csv
import math
import os
import re
import sys
from collections import Counter

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

# --------------------------------------------------------------------------------------
# 1. pydoc_topics.csv
# --------------------------------------------------------------------------------------

# scikit-learn's ENGLISH_STOP_WORDS (sklearn/feature_extraction/_stop_words.py, 318
# words, from the Glasgow Information Retrieval Group list), copied here so that this
# file does not need scikit-learn. Words of fewer than 3 letters are omitted (the
# tokeniser drops them anyway), and so are words that are Python vocabulary in this
# corpus rather than filler: "call", "else", "empty", "except", "name", "none".
STOP_WORDS = frozenset("""
about above across after afterwards again against all almost alone along already also
although always among amongst amoungst amount and another any anyhow anyone anything
anyway anywhere are around back became because become becomes becoming been before
beforehand behind being below beside besides between beyond bill both bottom but can
cannot cant con could couldnt cry describe detail does done down due during each eight
either eleven elsewhere enough etc even ever every everyone everything everywhere few
fifteen fifty fill find fire first five for former formerly forty found four from front
full further get give had has hasnt have hence her here hereafter hereby herein
hereupon hers herself him himself his how however hundred inc indeed interest into its
itself keep last latter latterly least less ltd made many may meanwhile might mill mine
more moreover most mostly move much must myself namely neither never nevertheless next
nine nobody noone nor not nothing now nowhere off often once one only onto other others
otherwise our ours ourselves out over own part per perhaps please put rather same see
seem seemed seeming seems serious several she should show side since sincere six sixty
some somehow someone something sometime sometimes somewhere still such system take ten
than that the their them themselves then thence there thereafter thereby therefore
therein thereupon these they thick thin third this those though three through
throughout thru thus together too top toward towards twelve twenty two under until upon
very via was well were what whatever when whence whenever where whereafter whereas
whereby wherein whereupon wherever whether which while whither who whoever whole whom
whose why will with within without would yet you your yours yourself yourselves
""".split())
# "does" is not in scikit-learn's list ("do" is, but has 2 letters); it is added here.

TOKEN_RE = re.compile(r"[a-z]{3,}")
MIN_DF = 3          # a term must occur in at least 3 documents ...
MAX_DF = 0.5        # ... and in at most half of them
MAX_TERMS = 1500    # keep at most this many terms, those with the highest document frequency


VERSION_NOTE_RE = re.compile(
    r"(?:Changed|Added|New) in version [0-9.]+|Deprecated since version [0-9.]+")


def strip_markup(text: str) -> str:
    """Remove what is notation rather than prose: grammar productions (a line with
    ``::=`` and the lines that continue it, up to the next blank line; their names,
    such as ``try_stmt`` or ``or_expr``, would otherwise flood every topic with "stmt"
    and "expr") and the "Changed in version 3.x" / "Added in version 3.x" prefixes of
    version notes (the note itself is kept)."""
    out, in_grammar = [], False
    for line in text.split("\n"):
        if "::=" in line:
            in_grammar = True
        elif not line.strip():
            in_grammar = False
        if not in_grammar:
            out.append(line)
    return VERSION_NOTE_RE.sub(" ", "\n".join(out))


def tokenize(text: str) -> list[str]:
    """Lowercase words of >= 3 ASCII letters, minus stop words.

    Splitting on anything that is not a letter also splits identifiers such as
    ``__init__`` or ``str.format`` into their words ("init", "str", "format").
    """
    return [t for t in TOKEN_RE.findall(text.lower()) if t not in STOP_WORDS]


def fold_plurals(docs: list[list[str]]) -> list[list[str]]:
    """Map a word ending in "s" to its singular when that singular occurs in the
    corpus: "classes" -> "class", "entries" -> "entry", "methods" -> "method",
    "raises" -> "raise". Words ending in "ss" ("class", "less") are left alone.
    A deliberately light stemmer, so that the terms stay readable words."""
    seen = set().union(*docs)
    fold = {}
    for w in seen:
        if not w.endswith("s") or w.endswith("ss"):
            continue
        cands = ([w[:-3] + "y"] if w.endswith("ies") else []) + [w[:-1]]
        if w.endswith(("sses", "xes", "ches", "shes")):
            cands.insert(0, w[:-2])
        for c in cands:
            if len(c) >= 3 and c in seen and c not in STOP_WORDS:
                fold[w] = c
                break
    return [[fold.get(t, t) for t in d] for d in docs]


def tfidf(docs: list[list[str]]) -> tuple[np.ndarray, list[str]]:
    """Sublinear-tf TF-IDF with smooth idf and L2-normalised rows (as scikit-learn's
    TfidfVectorizer(sublinear_tf=True) computes it), on a vocabulary filtered by
    document frequency."""
    n_docs = len(docs)
    df = Counter()
    for d in docs:
        df.update(set(d))
    max_df = MAX_DF * n_docs
    kept = [t for t, c in df.items() if MIN_DF <= c <= max_df]
    # Highest document frequency first, alphabetical among ties; then the columns are
    # written in alphabetical order.
    kept.sort(key=lambda t: (-df[t], t))
    vocab = sorted(kept[:MAX_TERMS])
    col = {t: j for j, t in enumerate(vocab)}
    X = np.zeros((n_docs, len(vocab)))
    for i, d in enumerate(docs):
        for t, c in Counter(d).items():
            j = col.get(t)
            if j is not None:
                X[i, j] = 1.0 + math.log(c)
    idf = np.array([math.log((1 + n_docs) / (1 + df[t])) + 1.0 for t in vocab])
    X *= idf
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    X /= np.where(norms > 0, norms, 1.0)
    return X, vocab


def make_pydoc_topics(path: str) -> tuple[np.ndarray, list[str], list[str]]:
    from pydoc_data.topics import topics

    names = sorted(topics)
    docs = fold_plurals([tokenize(strip_markup(topics[name])) for name in names])
    X, vocab = tfidf(docs)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow([""] + vocab)
        for name, row in zip(names, X):
            w.writerow([name] + ["0" if v == 0 else f"{v:.6g}" for v in row])
    return X, names, vocab


# --------------------------------------------------------------------------------------
# 2. digits.h5
# --------------------------------------------------------------------------------------

def make_digits(path: str) -> np.ndarray:
    import h5py
    from sklearn.datasets import load_digits

    d = load_digits()
    X = np.asarray(d.data, dtype=np.float64)          # (1797, 64), values 0..16
    y = np.asarray(d.target, dtype=np.int64)          # (1797,), digits 0..9
    col_labels = [f"px_{r}_{c}" for r in range(8) for c in range(8)]
    row_labels = [f"img_{i} (digit {t})" for i, t in enumerate(y)]
    str_t = h5py.string_dtype("utf-8")
    with h5py.File(path, "w", track_order=True) as f:
        ds = f.create_dataset("X", data=X, compression="gzip", compression_opts=9,
                              shuffle=True, track_times=False)
        ds.attrs["col_labels"] = np.array(col_labels, dtype=object).astype(str_t)
        ds.attrs["row_labels"] = np.array(row_labels, dtype=object).astype(str_t)
        ds.attrs["description"] = (
            "scikit-learn load_digits(): 1797 handwritten digits, 8x8 pixels, "
            "values 0..16 (count of set pixels in 4x4 blocks of a 32x32 bitmap); "
            "row i is image i flattened row-major")
        f.create_dataset("target", data=y, track_times=False)
        f.create_dataset("col_labels", data=np.array(col_labels, dtype=object),
                         dtype=str_t, track_times=False)
        f.create_dataset("row_labels", data=np.array(row_labels, dtype=object),
                         dtype=str_t, track_times=False)
    return X


# --------------------------------------------------------------------------------------
# 3. pluck_spectrogram.npy and pluck_basis.npy
# --------------------------------------------------------------------------------------

NPERSEG = 512       # 46.4 ms at 11025 Hz; bins 21.5 Hz apart
HOP = 64            # 5.8 ms between frames
# Fixed basis: one harmonic template per note, A3 to A4 on the C-major scale (the
# recording is a single plucked C4, 261.6 Hz), plus one broadband template.
BASIS_NOTES = [("A3", 57), ("B3", 59), ("C4", 60), ("D4", 62), ("E4", 64), ("F4", 65),
               ("G4", 67), ("A4", 69)]
N_HARMONICS_MAX = 40


def pluck_path() -> str:
    import test
    return os.path.join(os.path.dirname(test.__file__), "audiodata", "pluck-pcm16.wav")


def make_pluck(spec_path: str, basis_path: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from scipy.io import wavfile
    from scipy.signal import get_window, stft

    sr, x = wavfile.read(pluck_path())           # 11025 Hz, 3307 samples, stereo int16
    x = x.astype(np.float64) / 32768.0
    if x.ndim == 2:
        x = x.mean(axis=1)                       # mono mix
    freqs, _, Z = stft(x, fs=sr, window="hann", nperseg=NPERSEG, noverlap=NPERSEG - HOP)
    S = np.ascontiguousarray(np.abs(Z).T)        # (n_frames, n_freqs), non-negative

    # Each template is the magnitude spectrum, through the same Hann window and the same
    # scaling as scipy.signal.stft, of a steady harmonic tone with partial amplitudes
    # 1/h (a sawtooth-like spectrum) up to the Nyquist frequency; rows have unit L2 norm.
    win = get_window("hann", NPERSEG)
    t = np.arange(NPERSEG) / sr
    rows, labels = [], []
    for label, midi in BASIS_NOTES:
        f0 = 440.0 * 2.0 ** ((midi - 69) / 12)
        tone = np.zeros(NPERSEG)
        for h in range(1, N_HARMONICS_MAX + 1):
            if h * f0 >= sr / 2 - 2 * sr / NPERSEG:
                break
            tone += np.cos(2 * np.pi * h * f0 * t) / h
        rows.append(np.abs(np.fft.rfft(tone * win)) / win.sum())
        labels.append(f"{label} ({f0:.1f} Hz)")
    rows.append(np.ones(len(freqs)))             # broadband: the attack / noise floor
    labels.append("broadband")
    B = np.array(rows)
    B /= np.linalg.norm(B, axis=1, keepdims=True)
    np.save(spec_path, S)
    np.save(basis_path, B)
    return S, B, labels


def main() -> None:
    out = HERE
    X, names, vocab = make_pydoc_topics(os.path.join(out, "pydoc_topics.csv"))
    print(f"pydoc_topics.csv      {X.shape[0]} documents x {X.shape[1]} terms, "
          f"density {np.count_nonzero(X) / X.size:.3f}")
    D = make_digits(os.path.join(out, "digits.h5"))
    print(f"digits.h5             /X {D.shape}, /target, /row_labels, /col_labels")
    try:
        S, B, labels = make_pluck(os.path.join(out, "pluck_spectrogram.npy"),
                                  os.path.join(out, "pluck_basis.npy"))
    except FileNotFoundError as e:
        print(f"pluck: recording not found ({e}); this Python was built without its "
              "test package, so pluck_*.npy were not rebuilt", file=sys.stderr)
    else:
        print(f"pluck_spectrogram.npy {S.shape} (frames x frequencies)")
        print(f"pluck_basis.npy       {B.shape} (templates x frequencies): "
              + ", ".join(labels))


if __name__ == "__main__":
    main()
