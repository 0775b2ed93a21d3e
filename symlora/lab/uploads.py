"""A user's own data — a zip of images (one folder per class) or a text file — with the
limits and messages that the web app and the command line share.

Every problem raises ``ValueError`` with one sentence meant for the person who supplied
the data (what is wrong, what to do); nothing is extracted to disk.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .data import ImageSplits, TextSplits, SPLIT_RULES, load_image_folder_zip, text_splits


@dataclass
class Limits:
    """What an upload may hold (checked by the loaders, shown to the user)."""

    zip_bytes: int = 20_000_000
    images: int = 2_000
    image_size: int = 64  # every image is resized to this square
    text_chars: int = 1_000_000
    text_file_bytes: int = 4_000_000
    test_fraction: float = 0.2  # of each class, held out to measure accuracy

    def zip_text(self) -> str:
        return (f"a .zip up to **{self.zip_bytes / 1e6:.0f} MB** with up to **{self.images:,} images** "
                f"(PNG, JPG, GIF, BMP, WebP, TIFF); at least **2 classes**, each with at least 2 images. Images are "
                f"resized to {self.image_size}×{self.image_size}; {self.test_fraction:.0%} of each class is held out "
                f"to measure accuracy.")

    def text_text(self) -> str:
        return (f"up to **{self.text_chars:,} characters**, at least 2 pieces; 15 % of them are held out to "
                f"measure perplexity.")


def read_text_file(path: str | os.PathLike, limit: int) -> str:
    """A .txt file as text (UTF-8, else Latin-1); ValueError for binary or oversize files."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise ValueError(f"{path.name}: file not found") from err
    if size > limit:
        raise ValueError(f"{path.name} is too large ({size / 1e6:.1f} MB; the limit is {limit / 1e6:.0f} MB)")
    raw = path.read_bytes()
    if b"\x00" in raw[:65536]:
        raise ValueError(f"{path.name} does not look like a text file: upload plain text (.txt)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def load_images(path: str | os.PathLike, limits: Limits | None = None, seed: int = 0) -> ImageSplits:
    """A zip of one folder of images per class, within ``limits``, split with ``seed``."""
    lim = limits or Limits()
    return load_image_folder_zip(path, max_bytes=lim.zip_bytes, max_files=lim.images, size=lim.image_size,
                                 test_fraction=lim.test_fraction, seed=int(seed))


def load_text(text: str, limits: Limits | None = None, seed: int = 0, name: str = "your text") -> TextSplits:
    """Pasted text (one piece per line, or pieces between blank / ``%`` lines), within ``limits``."""
    lim = limits or Limits()
    return text_splits(text, name=name, seed=int(seed), max_chars=lim.text_chars)


def load_text_file(path: str | os.PathLike, limits: Limits | None = None, seed: int = 0) -> TextSplits:
    """A .txt file as :func:`load_text` reads it (named after the file)."""
    lim = limits or Limits()
    return load_text(read_text_file(path, lim.text_file_bytes), lim, seed, name=Path(path).name)


def describe(splits: ImageSplits | TextSplits) -> str:
    """``2 classes (circle, square) · 32 training / 8 test images`` or ``40 pieces of
    text for training / 7 held out (split: one piece per line, …)``."""
    if isinstance(splits, ImageSplits):
        classes = list(splits.classes)
        shown = ", ".join(classes[:8]) + (", …" if len(classes) > 8 else "")
        return f"{len(classes)} classes ({shown}) · {len(splits.train)} training / {len(splits.test)} test images"
    how = SPLIT_RULES.get(getattr(splits, "split", ""), "")
    return (f"{len(splits.train)} pieces of text for training / {len(splits.test)} held out"
            + (f" (split: {how})" if how else ""))
