"""Rebuild the README's figures: `nmf inspect --plot` of three fits of sample_data, as small PNGs.

Run from the repository root: .venv/bin/python docs/figures/make_figures.py
(needs matplotlib, which brings Pillow; the PNGs are reduced to 64 colours to stay small).
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
NMF = str(Path(sys.executable).parent / "nmf")
FIGURES = {
    # topics: the columns have labels (the terms), so each component is a bar chart of its top words
    "pydoc_topics": (["sample_data/pydoc_topics.csv", "-k", "8"], []),
    # images: each component of the 8 x 8 digits as an image; KL with the objective at every iteration
    "digits": (["sample_data/digits.h5", "-k", "16", "--loss", "kl", "--max-iter", "100", "--history", "all"],
                   ["--image-shape", "8x8"]),
    # a small matrix (53 x 257): the spectrogram beside its reconstruction, heatmaps of W and H
    "pluck_spectrogram": (["sample_data/pluck_spectrogram.npy", "-k", "4", "--loss", "kl", "--history", "all"], []),
}


def main():
    os.chdir(ROOT)  # the titles name the files as given: sample_data/..., NAME.nmf
    for name, (fit_args, plot_args) in FIGURES.items():
        out = f"{name}.nmf"
        try:
            subprocess.run([NMF, "fit", *fit_args, "-o", out, "-q", "--force"], check=True)
            with tempfile.TemporaryDirectory() as tmp:
                png = os.path.join(tmp, "plot.png")
                subprocess.run([NMF, "inspect", out, "--plot", png, *plot_args], check=True,
                               stdout=subprocess.DEVNULL)
                image = Image.open(png).convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)
                image.save(ROOT / "docs" / "figures" / f"{name}.png", optimize=True)
        finally:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
