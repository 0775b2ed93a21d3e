"""Collecting classes in the browser: the session's collection, its bounds, and the zip it
makes (read by the same loader, with the same rules, as an uploaded zip)."""

from __future__ import annotations

import numpy as np
import pytest

from app.collect import (Bounds, add_class, add_examples, counts_markdown, empty, problems_for_training, thumbnails,
                         undo, write_zip)
from app.userdata import Limits, UserDataCache

BOUNDS = Bounds(classes=3, per_class=4, total=10, bytes=200_000, size=32)


def drawing(kind: str, seed: int) -> np.ndarray:
    """A 280×280 white-on-black sketch: a filled square or a bar, a little shifted."""
    img = np.zeros((280, 280, 3), np.uint8)
    o = 10 * seed
    if kind == "square":
        img[60 + o:200 + o, 60 + o:200 + o] = 255
    else:
        img[40:240, 120 + o:150 + o] = 255
    return img


def test_classes_are_named_once_and_bounded():
    state, problem = add_class(empty(), "  circle ", BOUNDS)
    assert problem is None and state["classes"] == ["circle"]
    assert add_class(state, "Circle", BOUNDS)[1].startswith("there is already")
    assert add_class(state, "../", BOUNDS)[1].startswith("type a name")  # nothing safe left of it
    state, _ = add_class(state, "a/b", BOUNDS)
    assert state["classes"][-1] == "a b"  # a folder name in the zip, never a path
    state, _ = add_class(state, "third", BOUNDS)
    assert "at most 3 classes" in add_class(state, "fourth", BOUNDS)[1]


def test_examples_are_counted_bounded_and_undone(tmp_path):
    state, _ = add_class(empty(), "square", BOUNDS)
    state, added, problems = add_examples(state, "square", [("d", drawing("square", i)) for i in range(6)], BOUNDS)
    assert added == 4 and "most examples a class may have" in problems[0]
    assert add_examples(state, "nope", [("d", drawing("bar", 0))], BOUNDS)[2][0].startswith("add a class first")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    state, _ = add_class(state, "bar", BOUNDS)
    state, added, problems = add_examples(state, "bar", [("broken.png", str(broken)), ("d", drawing("bar", 1))], BOUNDS)
    assert added == 1 and "broken.png is not a readable image" in problems[0]
    assert "**square** 4 · **bar** 1" in counts_markdown(state, BOUNDS)
    assert problems_for_training(state) == ["give every class at least 2 examples (“bar” need more)"]
    before = state["bytes"]
    state = undo(state)
    assert len(state["images"]["bar"]) == 0 and state["bytes"] < before
    assert [label for _, label in thumbnails(state)] == ["square"] * 4


def test_the_collection_trains_through_the_zip_path(tmp_path):
    """The zip holds one folder per class; the upload loader accepts it: same classes,
    grey pictures (drawings), the held-out share of each class."""
    state = empty()
    for name in ("bar", "square"):
        state, _ = add_class(state, name, BOUNDS)
        state, _, _ = add_examples(state, name, [("d", drawing(name, i)) for i in range(4)], BOUNDS)
    assert problems_for_training(state) == [] and "Ready" in counts_markdown(state, BOUNDS)
    path = write_zip(state, tmp_path)
    data = UserDataCache(Limits(image_size=32)).images(path)
    assert data.classes == ["bar", "square"] and data.name == "my-classes.zip"
    assert data.splits.train.images.shape[1:] == (32, 32, 1)
    assert len(data.splits.train) + len(data.splits.test) == 8 and len(data.splits.test) == 2


def test_a_one_class_collection_is_refused_like_a_zip(tmp_path):
    state, _ = add_class(empty(), "only", BOUNDS)
    state, _, _ = add_examples(state, "only", [("d", drawing("bar", i)) for i in range(3)], BOUNDS)
    assert problems_for_training(state)[0] == "name at least 2 classes"
    with pytest.raises(ValueError, match="only one class"):
        UserDataCache().images(write_zip(state, tmp_path))
