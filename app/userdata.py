"""The user's own data: a zip of images (one folder per class) or pasted / uploaded text.

The limits and checks are the core's (``symlora.lab.uploads``, shared with the command line);
here: a small per-process cache of decoded zips (so checking an upload and training on
it read the zip once), and the sentences the page shows about the data in use.  Nothing
is copied: Gradio keeps uploads in its temporary cache (emptied hourly, see ``ui.py``)
and the zip is decoded in memory by ``symlora.lab.data.load_image_folder_zip``.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from symlora.lab.uploads import Limits, describe, read_text_file  # noqa: F401  (the shared limits and checks)


@dataclass
class UserData:
    """Data a user supplied, ready for ``symlora.lab.train.run(dataset=...)``."""

    kind: str  # "images" or "text"
    name: str
    splits: Any  # ImageSplits or TextSplits

    @property
    def classes(self) -> list[str] | None:
        return list(self.splits.classes) if self.kind == "images" else None

    def summary(self) -> str:
        """``2 classes (circle, square) · 32 training / 8 test images``."""
        return describe(self.splits)

    def test_sample(self, n: int, seed: int = 0) -> Any:
        """Up to ``n`` test images drawn across every class (an ``ImageDataset``, for the
        Try tab), or None for text."""
        if self.kind != "images":
            return None
        import torch

        test = self.splits.test
        order = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))[:n]
        return test.subset(order.sort().values)


class UserDataCache:
    """Decoded zips by (file, seed), the last few kept; text is split on demand (fast)."""

    def __init__(self, limits: Limits | None = None, capacity: int = 4) -> None:
        self.limits = limits or Limits()
        self.capacity = capacity
        self._items: OrderedDict[tuple, UserData] = OrderedDict()
        self._guard = threading.Lock()

    def images(self, path: str | os.PathLike, seed: int = 0) -> UserData:
        """The zip at ``path`` as :class:`UserData`; ValueError with a message for people."""
        from symlora.lab.uploads import load_images

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
        splits = load_images(path, self.limits, seed)
        data = UserData("images", path.name, splits)
        with self._guard:
            self._items[key] = data
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return data

    def text(self, text: str, seed: int = 0, name: str = "your text") -> UserData:
        from symlora.lab.uploads import load_text

        return UserData("text", name, load_text(text, self.limits, seed, name))

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
