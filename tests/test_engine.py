"""Many runs in one step (symlora.lab.multirun) and the scheduler with dedupe (symlora.lab.engine).

A tiny timm ViT on a tiny synthetic image task keeps every run to a fraction of a second.
"Equal" below means what fp32 rounding allows: the grouped step sums the same terms in
another order, so losses agree to ~1e-6 relative, far inside the 1e-4 the design promises.
"""

from __future__ import annotations

import threading
import time

import pytest
import torch

from symlora.lab.data import ImageDataset, ImageSplits, TextSplits
from symlora.lab.engine import Engine, data_key, run_key
from symlora.lab.multirun import Group, prepare_member, train_together
from symlora.lab.stacked import StackedAdamW
from symlora.lab.train import RunConfig, run
from symlora.lab.zoo import VisionModel

from conftest import VIT_CLASSES, tiny_vit

REL = 1e-4  # the promised agreement of a grouped run with the same run alone (fp32, CPU)
N_TEST = 40  # test images of the tiny task


def tiny_bundle() -> VisionModel:
    return VisionModel(name="tiny-vit", model=tiny_vit(0), image_size=16, in_chans=3, mean=(0.5,) * 3,
                       std=(0.5,) * 3, labels=[str(i) for i in range(VIT_CLASSES)], head_name="head",
                       default_targets=["qkv", "proj"])


def tiny_splits(n_train: int = 64, n_test: int = N_TEST, seed: int = 0) -> ImageSplits:
    """Images whose brightest quadrant-ish band tells the class: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    classes = [f"c{i}" for i in range(VIT_CLASSES)]

    def part(n: int) -> ImageDataset:
        labels = torch.randint(0, VIT_CLASSES, (n,), generator=g)
        images = torch.randint(0, 60, (n, 16, 16, 3), generator=g, dtype=torch.uint8)
        for i, c in enumerate(labels.tolist()):
            images[i, :, 3 * c:3 * c + 3] += 180
        return ImageDataset(images, labels, list(classes))

    return ImageSplits("tiny", part(n_train), part(n_test), "synthetic")


@pytest.fixture(scope="module")
def base():
    torch.set_num_threads(1)
    return tiny_bundle()


@pytest.fixture(scope="module")
def splits():
    return tiny_splits()


def cfg(**kw) -> RunConfig:
    values = dict(preset="digits", model="tiny-vit", data="tiny", device="cpu", steps=8, batch_size=8, eval_every=4,
                  lr=5e-3, emit_every=1, emit_interval_s=1e9)
    return RunConfig.from_preset(**(values | kw))


def losses(events) -> list[float]:
    return [e.loss for e in events if e.kind in ("step", "eval")]


def assert_same_run(alone, grouped) -> None:
    """Loss curve, accuracy and trained weights of the same run alone and in a group."""
    a, b = losses(alone), losses(grouped)
    assert len(a) == len(b) and a
    for x, y in zip(a, b):
        assert abs(x - y) <= REL * abs(x)
    ra, rb = alone[-1].result, grouped[-1].result
    assert ra.status == rb.status and ra.steps_done == rb.steps_done
    assert ra.metric_before == rb.metric_before, "the same model before training: the same evaluation"
    # after training the weights differ by rounding (~1e-6): at most a borderline test image may flip
    assert abs(ra.metric_after - rb.metric_after) <= 1 / N_TEST + 1e-12
    assert ra.adapter_config == rb.adapter_config and ra.classes == rb.classes
    assert ra.trainable_state.keys() == rb.trainable_state.keys()
    for k, v in ra.trainable_state.items():
        assert torch.linalg.vector_norm(v - rb.trainable_state[k]) <= 1e-3 * torch.linalg.vector_norm(v) + 1e-6, k


def solo(config: RunConfig, base, splits):
    return list(run(config, base=base, dataset=splits, keep_model=False))


def test_stacked_adamw_equals_torch_adamw_per_run():
    g = torch.Generator().manual_seed(0)
    start = [torch.randn(3, 4, generator=g) for _ in range(3)]
    lrs, wds = [1e-2, 3e-3, 5e-2], [0.0, 0.1, 0.01]
    refs = [torch.nn.Parameter(s.clone()) for s in start]
    opts = [torch.optim.AdamW([p], lr=lr, weight_decay=wd) for p, lr, wd in zip(refs, lrs, wds)]
    stacked = StackedAdamW()
    params = {"w": torch.nn.Parameter(start[0].clone().unsqueeze(0))}
    stacked.add_run({"w": start[0]})
    for t in range(6):
        if t == 2:  # a run joins late: its own step count starts at 0
            params["w"] = torch.nn.Parameter(torch.cat([params["w"].detach(), start[1].unsqueeze(0), start[2].unsqueeze(0)]))
            stacked.add_run({"w": start[1]})
            stacked.add_run({"w": start[2]})
        live = [0] if t < 2 else ([0, 2] if t == 4 else [0, 1, 2])  # run 1 sits out step 4 (paused)
        grads = torch.randn(3, 3, 4, generator=g)
        for i in live:
            refs[i].grad = grads[i].clone()
            opts[i].step()
        params["w"].grad = grads[: params["w"].shape[0]].clone()
        stacked.step(params, live, {"w": [lrs[i] for i in live]}, {"w": [wds[i] for i in live]})
    for i in range(3):
        assert torch.allclose(params["w"][i], refs[i], rtol=1e-5, atol=1e-6)
    assert stacked.steps == [6, 3, 4]


@pytest.mark.parametrize("method", ["symlora", "lora", "head-only"])
def test_grouped_runs_equal_the_same_runs_alone(base, splits, method):
    configs = [cfg(method=method, seed=0), cfg(method=method, seed=1, lr=1e-2, steps=6),
               cfg(method=method, seed=2, lora_alpha=4.0, weight_decay=0.01)]
    grouped = train_together(configs, base, datasets=[splits] * 3, device="cpu")
    for config, events in zip(configs, grouped):
        assert_same_run(solo(config, base, splits), events)
        assert [e.kind for e in events][0] == "start" and events[-1].kind == "done"
        assert any(e.spectrum for e in events if e.kind == "eval") == (method != "head-only")


@pytest.mark.parametrize("method", ["symlora", "lora"])
def test_runs_of_different_ranks_share_a_group_exactly(base, splits, method):
    """Ranks 2 and 4 in one group (adapters zero-padded to 4): each equals itself alone."""
    configs = [cfg(method=method, seed=0, r=2, steps=6), cfg(method=method, seed=1, r=4, steps=6)]
    events = [[], []]
    members = [prepare_member(c, base, splits, torch.device("cpu"), events[i].append)
               for i, c in enumerate(configs)]
    group = Group.for_run(base, members[0], torch.device("cpu"))
    group.join(members[0])
    group.step()
    group.join(members[1])  # a larger rank joins: the running run is padded in place
    while len(group):
        group.step()
    for c, ev in zip(configs, events):
        assert_same_run(solo(c, base, splits), ev)


def test_same_seed_same_curve_with_or_without_company(base, splits):
    alone = train_together([cfg(seed=5)], base, datasets=[splits], device="cpu")[0]
    crowd = train_together([cfg(seed=s) for s in (5, 6, 7, 8)], base, datasets=[splits] * 4, device="cpu")[0]
    assert_same_run(alone, crowd)


def test_join_mid_run_and_leave_early(base, splits):
    """Run B joins after A's third step; C leaves after 3 steps: each equals itself alone."""
    configs = {"a": cfg(seed=0), "b": cfg(seed=1), "c": cfg(seed=2, steps=3, eval_every=3)}
    events = {k: [] for k in configs}
    members = {k: prepare_member(c, base, splits, torch.device("cpu"), events[k].append)
               for k, c in configs.items()}
    group = Group.for_run(base, members["a"], torch.device("cpu"))
    group.join(members["a"])
    group.join(members["c"])
    for _ in range(3):
        group.step()
    assert len(group) == 1, "C left as soon as it was done"
    group.join(members["b"])
    while len(group):
        group.step()
    for k, c in configs.items():
        assert_same_run(solo(c, base, splits), events[k])


class Script:
    """A control that answers from a list, then "run" (or the last word when ``stick``)."""

    def __init__(self, words: list[str], stick: bool = False) -> None:
        self.words, self.stick, self.calls = list(words), stick, 0

    def __call__(self) -> str:
        self.calls += 1
        if len(self.words) > 1 or (self.words and not self.stick):
            return self.words.pop(0)
        return self.words[0] if self.words else "run"


@pytest.fixture
def engine(base, splits):
    eng = Engine(load_base=lambda name: base, device="cpu", stack=True, cache_size=4, cache_ttl_s=60,
                 load_data=lambda name, seed: splits)
    yield eng
    eng.close()


def test_stopping_one_run_leaves_the_others_unchanged(engine, base, splits):
    stop_after_3 = Script(["run"] * 3 + ["stop"], stick=True)
    h_stop = engine.submit(cfg(seed=1), control=stop_after_3)
    h_a = engine.submit(cfg(seed=0))
    h_pause = engine.submit(cfg(seed=2), control=Script(["pause"] * 5))  # skips a few group steps
    stopped = list(h_stop.events())
    assert stopped[-1].kind == "stopped" and stopped[-1].result.steps_done == 3
    assert "after 3 of 8 steps" in stopped[-1].message
    assert_same_run(solo(cfg(seed=0), base, splits), list(h_a.events()))
    assert_same_run(solo(cfg(seed=2), base, splits), list(h_pause.events()))


def test_a_diverging_run_ends_alone_with_an_error(engine, base, splits):
    bad = engine.submit(cfg(seed=3, lr=1e6))
    good = engine.submit(cfg(seed=0))
    final = list(bad.events())[-1]
    assert final.kind == "error" and "diverged" in final.message and final.result.status == "error"
    assert all(torch.isfinite(v).all() for v in final.result.trainable_state.values()), "weights before the NaN"
    assert_same_run(solo(cfg(seed=0), base, splits), list(good.events()))


def test_identical_submits_share_one_run(engine):
    first = engine.submit(cfg(seed=4), control=Script(["pause"] * 20))  # keep it running a moment
    second = engine.submit(cfg(seed=4))
    assert second.shared == "running" and second.key == first.key and first.shared is None
    a, b = list(first.events()), list(second.events())
    assert [e.to_dict() for e in a] == [e.to_dict() for e in b], "the late subscriber gets the whole curve"
    third = engine.submit(cfg(seed=4))
    assert third.shared == "finished" and third.age_s >= 0
    c = list(third.events())
    assert c[-1].result is a[-1].result, "the finished result (weights included) is shared, not recomputed"
    other = engine.submit(cfg(seed=5))
    assert other.shared is None and other.key != first.key
    list(other.events())


def test_a_run_with_two_subscribers_stops_only_when_both_cancel(engine):
    first = engine.submit(cfg(seed=6, steps=400, eval_every=400))
    second = engine.submit(cfg(seed=6, steps=400, eval_every=400))
    events = first.events()
    next(events), next(events)
    first.cancel()
    time.sleep(0.2)
    assert not second.done, "one subscriber left: the run goes on"
    second.cancel()
    assert list(events)[-1].kind == "stopped"


def test_cache_is_bounded_and_expires(base, splits):
    eng = Engine(load_base=lambda name: base, device="cpu", stack=False, cache_size=1, cache_ttl_s=0.5,
                 load_data=lambda name, seed: splits)
    try:
        for seed in (0, 1):
            list(eng.submit(cfg(seed=seed, steps=2, eval_every=2)).events())
        assert eng.submit(cfg(seed=1, steps=2, eval_every=2)).shared == "finished"
        evicted = eng.submit(cfg(seed=0, steps=2, eval_every=2))
        assert evicted.shared is None, "cache_size=1 kept only the latest run"
        list(evicted.events())
        time.sleep(0.6)
        assert eng.submit(cfg(seed=0, steps=2, eval_every=2)).shared is None, "expired after cache_ttl_s"
    finally:
        eng.close()


def test_different_data_never_share(engine, splits):
    other = tiny_splits(seed=1)
    assert data_key(splits) == data_key(tiny_splits()) != data_key(other)
    c = cfg(seed=7, steps=2, eval_every=2)
    assert run_key(c, data_key="a") != run_key(c, data_key="b") != run_key(c)
    assert run_key(c, data_key="a") == run_key(cfg(seed=7, steps=2, eval_every=2, emit_every=5), data_key="a")
    h1 = engine.submit(c, dataset=splits, data_key=data_key(splits))
    h2 = engine.submit(c, dataset=other, data_key=data_key(other))
    h3 = engine.submit(c, dataset=splits)  # no key: never shared
    h4 = engine.submit(c, dataset=splits)
    assert (h1.shared, h2.shared, h3.shared, h4.shared) == (None, None, None, None)
    assert len({h1.key, h2.key, h3.key, h4.key}) == 4
    for h in (h1, h2, h3, h4):
        assert list(h.events())[-1].kind == "done"


def test_full_fine_tuning_trains_alone_and_bad_data_raises(engine, base, splits):
    full = engine.submit(cfg(seed=0, method="full", steps=2, eval_every=2))
    assert list(full.events())[-1].kind == "done"
    with pytest.raises(ValueError):
        engine.submit(cfg(steps=0))
    text = engine.submit(cfg(seed=9), dataset=TextSplits("text", ["a b c"], ["d e"], "typed"))
    with pytest.raises(ValueError, match="is text"):
        list(text.events(timeout=30))


def test_a_viewer_who_stops_a_shared_run_gets_its_own_end(engine):
    stopper = Script(["run"] * 2 + ["stop"], stick=True)
    first = engine.submit(cfg(seed=8, steps=200, eval_every=200))
    second = engine.submit(cfg(seed=8, steps=200, eval_every=200), control=stopper)
    mine = list(second.events(timeout=30))
    assert mine[-1].kind == "stopped" and mine[-1].result is not None and "goes on" in mine[-1].message
    assert mine[-1].result.steps_done < 200 and mine[-1].result.trainable_state
    theirs = list(first.events())
    assert theirs[-1].kind == "done" and theirs[-1].result.steps_done == 200


def test_evaluations_in_stacked_forwards_agree_with_one_at_a_time(base, splits):
    """What a GPU group does to evaluate many runs at once (checked here on the CPU)."""
    def accuracies(batched: bool) -> list[list[float]]:
        events = [[] for _ in range(3)]
        members = [prepare_member(cfg(seed=s, steps=4, eval_every=2), base, splits, torch.device("cpu"),
                                  events[s].append) for s in range(3)]
        group = Group.for_run(base, members[0], torch.device("cpu"))
        group.batched_eval = batched
        group.join_many(members)
        while len(group):
            group.step()
        return [[e.metric for e in ev if e.metric is not None] for ev in events]

    one, together = accuracies(False), accuracies(True)
    n_test = len(splits.test.labels)
    assert len(one) == len(together) and all(len(a) == len(b) == 4 for a, b in zip(one, together))
    for a, b in zip(one, together):  # fp32 in another order: at most a borderline image flips
        assert all(abs(x - y) <= 1 / n_test + 1e-9 for x, y in zip(a, b))


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_language_model_runs_grouped_equal_alone(attention):
    """The text path: per-run next-token losses from one forward of the concatenated batch,
    with the plain attention formula and with SDPA (SmolLM2's: padded rows take its masked path)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from conftest import tiny_llama
    from symlora.lab.data import TextSplits
    from symlora.lab.zoo import TextModel

    words = "<|endoftext|> <unk> the cat sat on a mat dog ran far".split()
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>", unk_token="<unk>",
                                  pad_token="<|endoftext|>")
    model = tiny_llama(0)
    model.config._attn_implementation = attention
    lm = TextModel(name="tiny-llama", model=model, tokenizer=tok, default_targets=["q_proj", "o_proj"])
    texts = ["the cat sat on a mat", "a dog ran far", "the dog sat", "a cat ran on the mat", "the mat ran far",
             "a dog sat on a cat", "the cat ran", "a mat sat far"]
    data = TextSplits("tiny-text", texts, texts[:3], "synthetic")
    configs = [RunConfig.from_preset("fortunes", model="tiny-llama", data="tiny-text", device="cpu", steps=4,
                         eval_every=2, batch_size=4, max_tokens=8, lr=1e-2, seed=s, emit_every=1,
                         emit_interval_s=1e9) for s in (0, 1)]
    grouped = train_together(configs, lm, datasets=[data, data], device="cpu")
    for c, ev in zip(configs, grouped):
        alone = list(run(c, base=lm, dataset=data, keep_model=False))
        a, b = losses(alone), losses(ev)
        assert len(a) == len(b) and all(abs(x - y) <= REL * abs(x) for x, y in zip(a, b))
        pa, pb = alone[-1].result.metric_after, ev[-1].result.metric_after  # perplexity: no argmax, no flips
        assert abs(pa - pb) <= REL * pa


def test_a_run_stopped_while_it_waits_ends_at_once_with_a_result(base, splits):
    eng = Engine(load_base=lambda name: base, device="cpu", stack=False, max_runs=1,
                 load_data=lambda name, seed: splits)
    try:
        busy = eng.submit(cfg(seed=0, steps=400, eval_every=400))
        queued = eng.submit(cfg(seed=1), control=Script(["stop"], stick=True))
        final = list(queued.events(timeout=30))[-1]
        assert final.kind == "stopped" and final.result.steps_done == 0
        assert not busy.done, "it did not wait for the run ahead of it"
        busy.cancel()
        assert list(busy.events())[-1].kind == "stopped"
    finally:
        eng.close()


def test_runs_that_train_alone_wait_for_room_too(base, splits):
    """Runs that cannot share steps (adapter dropout) count against max_runs like stacked
    ones: with room for one, the second starts only after the first has ended."""
    eng = Engine(load_base=lambda name: base, device="cpu", max_runs=1, load_data=lambda name, seed: splits)
    try:
        long = dict(steps=100_000, eval_every=100_000, lora_dropout=0.1)  # both outlast the test
        first, second = eng.submit(cfg(seed=0, **long)), eng.submit(cfg(seed=1, **long))
        events = first.events()
        next(events)
        time.sleep(1.0)
        assert eng.stats()["solo"] == 1, "the second run started beside the first"
        first.cancel()
        assert list(events)[-1].kind == "stopped"
        later = second.events(timeout=60)
        assert next(e for e in later if e.kind == "step").step >= 1, "the second run starts once there is room"
        second.cancel()
        list(later)
    finally:
        eng.close()


def _threads_seen(base, splits, viewers: int) -> set[int]:
    """The training thread's thread count at each step of a 3-step run followed by ``viewers``
    subscribers, in an engine that leaves a core to the pages above one viewer."""
    seen: list[int] = []
    ready = threading.Event()

    def control() -> str:
        if not ready.is_set():
            return "pause"
        seen.append(torch.get_num_threads())  # called by the training thread before each step
        return "run"

    eng = Engine(load_base=lambda name: base, device="cpu", busy_viewers=1, load_data=lambda name, seed: splits)
    try:
        handles = [eng.submit(cfg(seed=7, steps=3, eval_every=3), control=control) for _ in range(viewers)]
        ready.set()
        for h in handles:
            list(h.events())
    finally:
        eng.close()
    return set(seen)


def test_many_viewers_leave_a_core_to_their_pages_in_bf16_only(base, splits, monkeypatch):
    """On a CPU, a run followed by many pages trains on one thread fewer (the pages are served
    on the same cores) — in bf16, whose products give the same bits with any thread count;
    float32 runs keep the process's setting, so their numbers never depend on the audience."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setenv("SYMLORA_CPU_DTYPE", "bfloat16")
        assert _threads_seen(base, splits, viewers=1) == {2}
        assert _threads_seen(base, splits, viewers=3) == {1}
        monkeypatch.setenv("SYMLORA_CPU_DTYPE", "float32")
        assert _threads_seen(base, splits, viewers=3) == {2}
    finally:
        torch.set_num_threads(before)  # the suite's setting (tests/conftest.py)


@pytest.mark.slow
def test_smollm2_runs_in_company_equal_the_same_runs_alone():
    """The ``fortunes`` preset's real model (SmolLM2-135M, SDPA attention, quotes padded to 64
    tokens): two runs with their own seeds trained in one stacked step equal each run alone."""
    from symlora.lab.data import load_dataset
    from symlora.lab.zoo import load_smollm2

    lm = load_smollm2()
    configs = [RunConfig.from_preset("fortunes", device="cpu", steps=2, seed=s, emit_every=1, emit_interval_s=1e9)
               for s in (100, 101)]
    data = {c.seed: load_dataset(c.data, seed=c.seed) for c in configs}
    eng = Engine(load_base=lambda name: lm, load_data=lambda name, seed: data[seed], device="cpu", stack=True)
    try:
        handles = [eng.submit(c) for c in configs]  # submitted together: one group, one step for both
        grouped = [list(h.events()) for h in handles]
    finally:
        eng.close()
    for c, together in zip(configs, grouped):
        alone = list(run(c, base=lm, dataset=data[c.seed], keep_model=False))
        a, b = losses(alone), losses(together)
        assert len(a) == len(b) == 2 and all(abs(x - y) <= REL * abs(x) for x, y in zip(a, b)), (a, b)
        pa, pb = alone[-1].result.metric_after, together[-1].result.metric_after
        assert abs(pa - pb) <= REL * pa, (pa, pb)
