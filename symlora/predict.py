"""Using a model: top-k image classes and sampled text, for the base and the tuned model.

Both take any model bundle from the zoo, so "base vs tuned" is simply the same call on
two bundles (or on one inside ``symlora.disable_adapters``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

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
) -> str:
    """Sample a continuation of ``prompt`` (greedy when ``temperature`` is 0)."""
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1")
    tok = bundle.tokenizer
    model = bundle.model
    device = next(model.parameters()).device
    enc = tok(prompt or (tok.bos_token or ""), return_tensors="pt").to(device)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    ids = enc["input_ids"]
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
