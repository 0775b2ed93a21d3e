"""Using a model: top-k image classes and sampled text, for the base and the tuned model.

Both take any model bundle from the zoo, so "base vs tuned" is simply the same call on
two bundles (or on one inside ``symlora.disable_adapters``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import check_int, check_number
from .zoo import TextModel, VisionModel

MAX_IMAGE_PIXELS = 4096 * 4096


def image_array(image: str | Path | np.ndarray | torch.Tensor | object) -> torch.Tensor:
    """Any image (path, PIL image, H×W or H×W×C array) as a uint8 tensor (H, W, C).

    Raises ``ValueError`` for files that are not images or are absurdly large.
    """
    if isinstance(image, (str, Path)):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(image) as img:
                if img.width * img.height > MAX_IMAGE_PIXELS:
                    raise ValueError(f"image {img.width}×{img.height} is too large")
                image = np.asarray(img.convert("RGBA" if img.mode in ("RGBA", "LA", "P") else "RGB"))
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"{Path(image).name} is not an image that can be read: {err}") from err
    elif hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        image = np.asarray(image.convert("RGB"))
    arr = torch.as_tensor(np.asarray(image))
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4) or min(arr.shape[:2]) < 1:
        raise ValueError(f"expected an H×W or H×W×C image, got shape {tuple(arr.shape)}")
    if arr.shape[-1] == 4:  # drawn sketches: transparent background → white, strokes keep their colour
        rgb, alpha = arr[..., :3].float(), arr[..., 3:].float() / 255
        arr = (rgb * alpha + 255 * (1 - alpha)).round()
    if arr.dtype != torch.uint8:
        arr = arr.float()
        if arr.max() <= 1.0:
            arr = arr * 255
        arr = arr.clamp(0, 255).round().to(torch.uint8)
    return arr


@torch.no_grad()
def classify(bundle: VisionModel, image: object, k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` most likely classes with their probabilities (summing to ≤ 1)."""
    x = bundle.preprocess(image_array(image)[None])
    device = next(bundle.model.parameters()).device
    was_training = bundle.model.training
    bundle.model.eval()
    probs = torch.softmax(bundle.model(x.to(device)).float(), dim=-1)[0].cpu()
    bundle.model.train(was_training)
    top = probs.topk(min(k, probs.numel()))
    return [(bundle.labels[i], float(p)) for p, i in zip(top.values, top.indices)]


def context_length(bundle: TextModel, default: int = 2048) -> int:
    """How many tokens the model reads at once (its position embeddings)."""
    value = getattr(getattr(bundle.model, "config", None), "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else default


def fit_prompt(bundle: TextModel, prompt: str, max_new_tokens: int,
               max_prompt_tokens: int | None = None) -> tuple[list[int], int]:
    """The token ids of ``prompt`` that fit, and how many tokens were cut from its start.

    The prompt keeps its *end* (what the continuation follows) and at most
    ``min(max_prompt_tokens, context - max_new_tokens)`` tokens, so the work of one call
    is bounded whatever the prompt's length; the text is cut to 16 characters per kept
    token before tokenizing, so a megabyte of text is not even tokenized."""
    budget = max(1, context_length(bundle) - max_new_tokens)
    if max_prompt_tokens is not None:
        budget = max(1, min(budget, max_prompt_tokens))
    tok = bundle.tokenizer
    text = prompt or ""
    cut_chars = len(text) > 16 * budget
    if cut_chars:
        text = text[-16 * budget:]
    ids = list(tok(text)["input_ids"]) if text else []
    dropped = max(0, len(ids) - budget)
    if dropped:
        ids = ids[dropped:]
    elif cut_chars:
        dropped = 1  # the character cut alone removed text: at least one token's worth
    if not ids:
        ids = [tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id]
    return ids, dropped


def _cache_keyword(model: torch.nn.Module) -> str:
    """The forward argument that takes the key/value cache: ``cache`` in transformers ≥ 5.2x
    (where ``past_key_values`` warns that it is deprecated), ``past_key_values`` before."""
    import inspect

    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _new_cache(model: torch.nn.Module):
    """An empty ``DynamicCache`` the model fills in place, step after step."""
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config)
    except TypeError:  # older transformers: no config argument
        return DynamicCache()


@torch.no_grad()
def generate(
    bundle: TextModel,
    prompt: str,
    *,
    max_new_tokens: int = 40,
    temperature: float = 0.8,
    top_k: int = 50,
    seed: int = 0,
    max_prompt_tokens: int | None = None,
) -> str:
    """Sample a continuation of ``prompt`` (greedy when ``temperature`` is 0).

    Bounded by construction: at most ``max_new_tokens`` (within the model's context)
    are generated after the end of the prompt cut by :func:`fit_prompt`."""
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, 1, context_length(bundle) - 1)
    temperature = check_number("temperature", temperature, 0, 100)
    seed = check_int("seed", seed, 0, 2**64 - 1)
    tok = bundle.tokenizer
    model = bundle.model
    device = next(model.parameters()).device
    prompt_ids, _ = fit_prompt(bundle, prompt, max_new_tokens, max_prompt_tokens)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    ids = torch.tensor([prompt_ids], device=device)
    was_training = model.training
    model.eval()
    cache = {_cache_keyword(model): _new_cache(model)}
    out: list[int] = []
    step_input = ids
    for _ in range(max_new_tokens):
        res = model(input_ids=step_input, use_cache=True, **cache)
        logits = res.logits[0, -1].float().cpu()
        if temperature <= 0:
            next_id = int(logits.argmax())
        else:
            logits = logits / temperature
            if top_k:
                kth = logits.topk(min(top_k, logits.numel())).values[-1]
                logits[logits < kth] = -float("inf")
            next_id = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator))
        if next_id == tok.eos_token_id:
            break
        out.append(next_id)
        step_input = torch.tensor([[next_id]], device=device)
    model.train(was_training)
    return tok.decode(out, skip_special_tokens=True)
