"""The user's own data: a zip of images (one folder per class) or pasted / uploaded text.

Limits, a small per-process cache of decoded zips (so checking an upload and training on
it read the zip once), and the sentences the page shows about the data in use.  Nothing
is copied: Gradio keeps uploads in its temporary cache (emptied hourly, see ``ui.py``)
and the zip is decoded in memory by ``symlora.data.load_image_folder_zip``.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Limits:
    """What an upload may hold (checked by the core loader, shown in the page)."""

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


@dataclass
class UserData:
    """Data a user supplied, ready for ``symlora.train.run(dataset=...)``."""

    kind: str  # "images" or "text"
    name: str
    splits: Any  # ImageSplits or TextSplits

    @property
    def classes(self) -> list[str] | None:
        return list(self.splits.classes) if self.kind == "images" else None

    def summary(self) -> str:
        """``2 classes (circle, square) · 32 training / 8 test images``."""
        s = self.splits
        if self.kind == "images":
            shown = ", ".join(self.classes[:8]) + (", …" if len(self.classes) > 8 else "")
            return (f"{len(self.classes)} classes ({shown}) · {len(s.train)} training / {len(s.test)} test images")
        from symlora.data import SPLIT_RULES

        how = SPLIT_RULES.get(getattr(s, "split", ""), "")
        return (f"{len(s.train)} pieces of text for training / {len(s.test)} held out"
                + (f" (split: {how})" if how else ""))

    def test_sample(self, n: int, seed: int = 0) -> Any:
        """Up to ``n`` test images drawn across every class (an ``ImageDataset``, for the
        Try tab), or None for text."""
        if self.kind != "images":
            return None
        import torch

        test = self.splits.test
        order = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))[:n]
        return test.subset(order.sort().values)


def read_text_file(path: str | os.PathLike, limit: int) -> str:
    """A .txt upload as text (UTF-8, else Latin-1); ValueError for binary or oversize files."""
    path = Path(path)
    size = path.stat().st_size
    if size > limit:
        raise ValueError(f"{path.name} is too large ({size / 1e6:.1f} MB; the limit is {limit / 1e6:.0f} MB)")
    raw = path.read_bytes()
    if b"\x00" in raw[:65536]:
        raise ValueError(f"{path.name} does not look like a text file: upload plain text (.txt)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class UserDataCache:
    """Decoded zips by (file, seed), the last few kept; text is split on demand (fast)."""

    def __init__(self, limits: Limits | None = None, capacity: int = 4) -> None:
        self.limits = limits or Limits()
        self.capacity = capacity
        self._items: OrderedDict[tuple, UserData] = OrderedDict()
        self._guard = threading.Lock()

    def images(self, path: str | os.PathLike, seed: int = 0) -> UserData:
        """The zip at ``path`` as :class:`UserData`; ValueError with a message for people."""
        from symlora.data import load_image_folder_zip

        path = Path(path)
        try:
            stat = path.stat()
        except OSError as err:
            raise ValueError(f"{path.name}: the uploaded file is gone (uploads are kept for an hour); "
                             f"upload it again") from err
        key = (str(path), stat.st_size, stat.st_mtime_ns, int(seed), self.limits.zip_bytes, self.limits.images)
        with self._guard:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        lim = self.limits
        splits = load_image_folder_zip(path, max_bytes=lim.zip_bytes, max_files=lim.images, size=lim.image_size,
                                       test_fraction=lim.test_fraction, seed=int(seed))
        data = UserData("images", path.name, splits)
        with self._guard:
            self._items[key] = data
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return data

    def text(self, text: str, seed: int = 0, name: str = "your text") -> UserData:
        from symlora.data import text_splits

        return UserData("text", name, text_splits(text, name=name, seed=int(seed), max_chars=self.limits.text_chars))

    def resolve(self, task: str, zip_path: Any, text: str | None, seed: int = 0) -> UserData | None:
        """The user's data that fits a model of ``task`` ("vision" / "text"), None when the
        user gave none (the preset's data is used).  Raises ValueError for bad data."""
        if task == "vision" and zip_path:
            return self.images(file_path(zip_path), seed)
        if task == "text" and text and text.strip():
            return self.text(text, seed)
        return None


def file_path(value: Any) -> str:
    """The path of a ``gr.File`` value (a path string, or a dict / FileData from a client)."""
    if isinstance(value, dict):
        return str(value.get("path") or value.get("name"))
    return str(getattr(value, "path", value))
