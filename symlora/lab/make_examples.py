"""Write the app's example images (``assets/examples``) from the installed datasets.

    python -m symlora.lab.make_examples --out assets/examples

One digit of each class from the MNIST-5k *test* split (seed 0) and one item of a few
Fashion-MNIST classes from its test set: 28×28 grey PNGs, a few hundred bytes each.
The label is in the file name (``digit-7.png``, ``fashion-ankle-boot.png``).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path
from typing import Any

from .data import ImageDataset, load_fashion_mnist, load_mnist_5k

log = logging.getLogger(__name__)

FASHION_EXAMPLES = ("T-shirt/top", "Trouser", "Sneaker", "Bag", "Ankle boot")


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def _first_of(dataset: ImageDataset, label: str) -> Any:
    from PIL import Image

    index = int((dataset.labels == dataset.classes.index(label)).nonzero()[0])
    return Image.fromarray(dataset.images[index, ..., 0].numpy())


def write_examples(out: str | Path) -> list[Path]:
    """Write the example PNGs into ``out`` and return their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    digits = load_mnist_5k(seed=0).test
    for label in digits.classes:
        path = out / f"digit-{label}.png"
        _first_of(digits, label).save(path, optimize=True)
        written.append(path)
    fashion = load_fashion_mnist().test
    for label in FASHION_EXAMPLES:
        path = out / f"fashion-{_slug(label)}.png"
        _first_of(fashion, label).save(path, optimize=True)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="write the app's example images")
    p.add_argument("--out", default="assets/examples")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    paths = write_examples(args.out)
    log.info("wrote %d images, %d bytes, to %s", len(paths), sum(q.stat().st_size for q in paths), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
