"""The kinds of job the engine runs, each as batches → loss → metric.

* :class:`ImageClassification`: a timm model with a fresh head, cross-entropy, accuracy.
* :class:`LanguageModeling`: a causal LM on short texts, next-token loss, held-out perplexity.
* :class:`TextClassification`: an encoder with a head on labelled texts, cross-entropy, accuracy.

Both draw batches from a private ``torch.Generator`` so the data order is a function of
the seed alone: every method of a comparison sees the same batches.  Both evaluate in the
run's compute ``dtype`` (:mod:`symlora.lab.precision`: bf16 autocast where it is native).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data import ImageSplits, TextSplits, TopicSplits
from .precision import autocast
from .zoo import EncoderClassifier, TextModel, VisionModel


def _batch_indices(n: int, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Endless shuffled epochs of indices; a short last batch is dropped when n ≥ batch."""
    while True:
        perm = torch.randperm(n, generator=generator)
        full = n - n % batch_size if n >= batch_size else n
        for i in range(0, full, batch_size):
            yield perm[i:i + batch_size]


class ImageClassification:
    """Fine-tune an image classifier on :class:`ImageSplits`; metric: test accuracy."""

    metric_name = "accuracy"
    unit = "images/s"

    def __init__(self, bundle: VisionModel, data: ImageSplits, device: torch.device, eval_limit: int = 2000,
                 dtype: torch.dtype = torch.float32) -> None:
        self.bundle = bundle
        self.device = device
        self.dtype = dtype
        self.classes = data.train.classes
        self.train_x = bundle.preprocess(data.train.images)
        self.train_y = data.train.labels.long()
        n_eval = min(len(data.test.labels), eval_limit)
        self.test_x = bundle.preprocess(data.test.images[:n_eval])
        self.test_y = data.test.labels[:n_eval].long()
        if len(self.train_y) == 0 or len(self.test_y) == 0:
            raise ValueError("the dataset needs at least one training and one test image")

    def batches(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        for idx in _batch_indices(len(self.train_y), batch_size, generator):
            yield self.train_x[idx].to(self.device), self.train_y[idx].to(self.device)

    @staticmethod
    def batch_items(batch: tuple[Tensor, Tensor]) -> int:
        return int(batch[1].numel())

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        return F.cross_entropy(model(x).float(), y)

    @torch.inference_mode()
    def evaluate(self, model: nn.Module, batch_size: int = 500) -> float:
        was_training = model.training
        model.eval()
        correct = 0
        with autocast(self.device, self.dtype):
            for i in range(0, len(self.test_y), batch_size):
                x = self.test_x[i:i + batch_size].to(self.device)
                correct += int((model(x).argmax(-1).cpu() == self.test_y[i:i + batch_size]).sum())
        model.train(was_training)
        return correct / len(self.test_y)


class LanguageModeling:
    """Fine-tune a causal LM on short texts; metric: held-out perplexity (lower is better)."""

    metric_name = "perplexity"
    unit = "tokens/s"

    def __init__(self, bundle: TextModel, data: TextSplits, device: torch.device, max_tokens: int = 64, eval_limit: int = 64,
                 dtype: torch.dtype = torch.float32) -> None:
        if not data.train or not data.test:
            raise ValueError("the text data needs at least one training and one held-out text")
        self.bundle = bundle
        self.device = device
        self.dtype = dtype
        self.classes = None
        self.train = self._encode(data.train, max_tokens)
        self.test = self._encode(data.test[:eval_limit], max_tokens)

    def _encode(self, texts: list[str], max_tokens: int) -> dict[str, Tensor]:
        tok = self.bundle.tokenizer
        eos = tok.eos_token or ""
        enc = tok([t.strip() + eos for t in texts], max_length=max_tokens, truncation=True, padding="max_length", return_tensors="pt")
        labels = enc["input_ids"].clone()
        labels[enc["attention_mask"] == 0] = -100
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}

    def batches(self, batch_size: int, generator: torch.Generator) -> Iterator[dict[str, Tensor]]:
        n = len(self.train["input_ids"])
        for idx in _batch_indices(n, batch_size, generator):
            yield {k: v[idx].to(self.device) for k, v in self.train.items()}

    @staticmethod
    def batch_items(batch: dict[str, Tensor]) -> Tensor:
        """Tokens in ``batch``, as a device tensor: counting them must not wait for the device."""
        return batch["attention_mask"].sum()

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> Tensor:
        return model(**batch).loss.float()

    @torch.inference_mode()
    def evaluate(self, model: nn.Module, batch_size: int = 16) -> float:
        """exp(mean next-token NLL) over every held-out token."""
        was_training = model.training
        model.eval()
        total_nll, total_tokens = 0.0, 0
        n = len(self.test["input_ids"])
        for i in range(0, n, batch_size):
            batch = {k: v[i:i + batch_size].to(self.device) for k, v in self.test.items()}
            with autocast(self.device, self.dtype):
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
            labels = batch["labels"][:, 1:]
            nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum")
            total_nll += float(nll)
            total_tokens += int((labels != -100).sum())
        model.train(was_training)
        return math.exp(total_nll / max(total_tokens, 1))


class TextClassification:
    """Fine-tune an :class:`~symlora.lab.zoo.EncoderClassifier` on :class:`TopicSplits`;
    metric: test accuracy.  Texts are tokenised once, cut and padded to ``max_tokens``."""

    metric_name = "accuracy"
    unit = "texts/s"

    def __init__(self, bundle: EncoderClassifier, data: TopicSplits, device: torch.device, max_tokens: int = 64,
                 eval_limit: int = 2000) -> None:
        if len(data.train) == 0 or len(data.test) == 0:
            raise ValueError("the dataset needs at least one training and one test text")
        self.bundle = bundle
        self.device = device
        self.classes = data.train.classes
        self.train_x = self._encode(data.train.texts, max_tokens)
        self.train_y = data.train.labels.long()
        n_eval = min(len(data.test), eval_limit)
        self.test_x = self._encode(data.test.texts[:n_eval], max_tokens)
        self.test_y = data.test.labels[:n_eval].long()

    def _encode(self, texts: list[str], max_tokens: int) -> dict[str, Tensor]:
        enc = self.bundle.tokenizer([t.strip() for t in texts], max_length=max_tokens, truncation=True,
                                    padding="max_length", return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def batches(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple[dict[str, Tensor], Tensor]]:
        for idx in _batch_indices(len(self.train_y), batch_size, generator):
            yield {k: v[idx].to(self.device) for k, v in self.train_x.items()}, self.train_y[idx].to(self.device)

    @staticmethod
    def batch_items(batch: tuple[dict[str, Tensor], Tensor]) -> int:
        return int(batch[1].numel())

    def loss(self, model: nn.Module, batch: tuple[dict[str, Tensor], Tensor]) -> Tensor:
        x, y = batch
        return F.cross_entropy(model(**x).float(), y)

    @torch.inference_mode()
    def evaluate(self, model: nn.Module, batch_size: int = 256) -> float:
        was_training = model.training
        model.eval()
        correct = 0
        for i in range(0, len(self.test_y), batch_size):
            x = {k: v[i:i + batch_size].to(self.device) for k, v in self.test_x.items()}
            correct += int((model(**x).argmax(-1).cpu() == self.test_y[i:i + batch_size]).sum())
        model.train(was_training)
        return correct / len(self.test_y)
