"""The hf backend with the real embedded SmolLM2-135M-Instruct on CPU (short generations)."""

from __future__ import annotations

import copy
from collections import deque
import re

import pytest
import torch
from peft import LoraConfig, get_peft_model

import fireact.llm.hf.batch as batch_module
from fireact.llm.base import TokenIds
from fireact.llm.hf import HFBackend
from fireact.llm.hf.batch import SlotLayer
from fireact.llm.hf.caches import History, HistoryCache

from .rollouts import three_ways

EMBEDDED = "embedded:smollm2-135m-instruct"
REACT = """Answer the question with Thought, Action and Observation steps.
Question: What is the capital of the country where the Eiffel Tower is?
Thought: I need to search the Eiffel Tower.
Action: search[Eiffel Tower]
Observation: The Eiffel Tower is a wrought-iron lattice tower in Paris, France.
Thought: I need to search France.
Action: search[France]
Observation: France is a country in Western Europe. Its capital is Paris.
Thought: The capital of France is Paris.
Action: finish[Paris]

Question: Which river flows through the city where Big Ben stands?
Thought:"""
CAPITAL = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
# Different lengths (5 to ~130 tokens), strings and chat messages mixed: batches get left padding.
PROMPTS = ["The capital of France is", REACT, CAPITAL, "Once upon a time, in a land far away, there lived a"]


def variant(backend: HFBackend, **settings) -> HFBackend:
    """The same loaded model with other generation settings (and no request of the original's)."""
    other = copy.copy(backend)
    other.__dict__.update(_waiting=deque(), _batch=None, **settings)
    return other


@pytest.fixture(scope="module")
def react_free(hf_backend):
    """The greedy continuation of the ReAct prompt with no stop string."""
    return hf_backend.generate([REACT], max_tokens=32)[0]


def test_built_from_the_composed_hydra_config(hf_backend):
    assert (hf_backend.backend, hf_backend.model) == ("hf", "SmolLM2-135M-Instruct")
    assert hf_backend.lm.device.type == "cpu" and hf_backend.lm.dtype == torch.float32
    assert hf_backend.tokenizer.padding_side == "left"


def test_batched_greedy_equals_one_prompt_at_a_time(hf_backend):
    one_by_one = [hf_backend.generate([p], max_tokens=8)[0] for p in PROMPTS]
    assert hf_backend.generate(PROMPTS, max_tokens=8) == one_by_one
    assert variant(hf_backend, batch_size=3).generate(PROMPTS, max_tokens=8) == one_by_one  # chunks of 3 and 1
    assert len({c.text for c in one_by_one}) == len(PROMPTS)


def test_token_counts_exclude_padding(hf_backend):
    tok = hf_backend.tokenizer
    completions = hf_backend.generate(PROMPTS, max_tokens=6)
    chat_ids = tok.apply_chat_template(CAPITAL, add_generation_prompt=True, return_dict=True)["input_ids"]
    expected = [len(tok(p)["input_ids"]) for p in PROMPTS[:2]] + [len(chat_ids), len(tok(PROMPTS[3])["input_ids"])]
    assert [c.prompt_tokens for c in completions] == expected
    for c in completions:
        assert c.finish_reason == "length" and c.completion_tokens == 6


def test_chat_messages_are_rendered_with_the_chat_template(hf_backend):
    rendered = hf_backend.tokenizer.apply_chat_template(CAPITAL, add_generation_prompt=True, tokenize=False)
    assert rendered.endswith("<|im_start|>assistant\n")
    chat, raw = hf_backend.generate([CAPITAL, rendered], max_tokens=5)
    assert chat == raw
    assert chat.text.strip()


def test_end_of_sequence_ends_the_text_and_is_counted(hf_backend):
    done = hf_backend.generate([CAPITAL], max_tokens=24)[0]
    assert done.finish_reason == "stop" and done.completion_tokens < 24
    assert "Paris" in done.text and "<|im_end|>" not in done.text
    # One token fewer gives the same text without the end-of-sequence token: it was counted.
    cut = hf_backend.generate([CAPITAL], max_tokens=done.completion_tokens - 1)[0]
    assert (cut.text, cut.finish_reason) == (done.text, "length")


def assert_stops_at(backend: HFBackend, stop: str, free_text: str) -> None:
    """Generation with `stop` returns the greedy text cut before it, and ends on the token completing it."""
    assert stop in free_text, "the test prompt must lead the model to emit the stop string"
    stopped = backend.generate([REACT], stop=[stop], max_tokens=32)[0]
    assert stopped.text == free_text[: free_text.index(stop)]
    assert stopped.finish_reason == "stop" and stopped.stop == stop
    n = stopped.completion_tokens
    assert stop in backend.generate([REACT], max_tokens=n)[0].text
    assert stop not in backend.generate([REACT], max_tokens=n - 1)[0].text


def test_react_observation_stop_string(hf_backend, react_free):
    assert_stops_at(hf_backend, "\nObservation:", react_free.text)  # four tokens: "\n", "Obs", "ervation", ":"


def test_stop_string_starting_inside_a_token_and_spanning_several(hf_backend, react_free):
    text = react_free.text
    start = re.search(r"\w{4,}", text).start() + 2  # inside a word
    stop = text[start : start + 12]
    assert text.index(stop) == start
    assert len(hf_backend.tokenizer.tokenize(stop)) >= 3
    assert_stops_at(hf_backend, stop, text)


def test_earliest_of_several_stop_strings_wins_per_prompt(hf_backend, react_free):
    free = hf_backend.generate([REACT, "The capital of France is"], max_tokens=12)
    stops = ["\nAction:", " Paris"]
    stopped = hf_backend.generate([REACT, "The capital of France is"], stop=stops, max_tokens=32)
    for f, s in zip([react_free, free[1]], stopped):
        cut = min(f.text.index(x) for x in stops if x in f.text)
        assert s.text == f.text[:cut] and s.finish_reason == "stop"


def test_seeded_sampling_is_reproducible(hf_backend):
    prompts = ["Once upon a time", CAPITAL]
    rng_before = torch.get_rng_state()
    first = variant(hf_backend, temperature=1.0, top_p=0.95, seed=7, _seeded=0)
    again = variant(hf_backend, temperature=1.0, top_p=0.95, seed=7, _seeded=0)
    runs = [b.generate(prompts, max_tokens=8) for b in (first, again, first, again)]
    assert runs[0] == runs[1] and runs[2] == runs[3]
    assert runs[0] != runs[2]  # the next call samples under the next seed
    assert variant(hf_backend, temperature=1.0, seed=8, _seeded=0).generate(prompts, max_tokens=8) != runs[0]
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's RNG is left alone


def test_a_seeded_prompt_samples_the_same_alone_or_in_any_batch(hf_backend):
    sampler = variant(hf_backend, temperature=1.0, top_p=0.9, seed=None, _seeded=0)
    alone = sampler.generate([CAPITAL], max_tokens=12, seeds=[11])[0]
    batched = sampler.generate(["Once upon a time", CAPITAL, REACT], max_tokens=12, seeds=[5, 11, 6])
    assert batched[1] == alone
    draws = {sampler.generate([CAPITAL], max_tokens=12, seeds=[seed])[0].text for seed in range(6)}
    assert len(draws) > 1  # other seeds, other samples


def test_top_p_keeps_the_smallest_set_reaching_it(hf_backend):
    sampler = variant(hf_backend, temperature=1.0, top_p=0.5, seed=None, _seeded=0)
    logits = torch.log(torch.tensor([[0.1, 0.45, 0.3, 0.15]]))
    generator = torch.Generator().manual_seed(0)
    draws = {sampler._next_token(logits, [generator])[0][0] for _ in range(200)}
    assert draws == {1, 2}  # 0.45 alone is short of 0.5; with 0.3 it reaches it


def test_lora_adapter_loads_and_changes_the_output(hf_backend, tmp_path):
    # A LoRA with non-zero B matrices (init_lora_weights=False) changes the model from the start;
    # seeded and scaled up so the change does not depend on the RNG state earlier tests left.
    torch.manual_seed(0)
    lora = get_peft_model(
        copy.deepcopy(hf_backend.lm),
        LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    lora.save_pretrained(tmp_path / "adapter")
    tuned = HFBackend({"name": "tuned", "path": EMBEDDED, "adapter": str(tmp_path / "adapter")}, device="cpu")
    prompts = ["The capital of France is", CAPITAL]
    base_out = hf_backend.generate(prompts, max_tokens=6)
    tuned_out = tuned.generate(prompts, max_tokens=6)
    assert [c.text for c in tuned_out] != [c.text for c in base_out]
    ids = hf_backend.tokenizer(prompts[0], return_tensors="pt")
    with torch.inference_mode():
        direct = lora.generate(**ids, max_new_tokens=6, do_sample=False)[0, ids["input_ids"].shape[1] :]
    assert tuned_out[0].text == hf_backend.tokenizer.decode(direct, skip_special_tokens=True)
    # The same LoRA merged into a saved checkpoint folder, given as the model path, generates the same.
    lora.merge_and_unload().save_pretrained(tmp_path / "merged")
    hf_backend.tokenizer.save_pretrained(tmp_path / "merged")
    merged = HFBackend({"name": "merged", "path": str(tmp_path / "merged")}, device="cpu")
    assert merged.generate(prompts, max_tokens=6) == tuned_out


def test_missing_adapter_fails_at_construction_naming_the_path(tmp_path):
    missing = tmp_path / "no-such-adapter"
    with pytest.raises(FileNotFoundError, match="no-such-adapter"):
        HFBackend({"name": "x", "path": EMBEDDED, "adapter": str(missing)}, device="cpu")
    missing.mkdir()  # a folder without adapter_config.json is no adapter either
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        HFBackend({"name": "x", "path": EMBEDDED, "adapter": str(missing)}, device="cpu")


def test_missing_local_model_folder_fails_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="not-a-checkpoint"):
        HFBackend({"name": "x", "path": str(tmp_path / "not-a-checkpoint")}, device="cpu")


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"temperature": -0.5}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"device": "tpu"}, "device"),
        ({"dtype": "int8"}, "dtype"),
        ({"history_cache_tokens": -1}, "history_cache_tokens"),
    ],
)
def test_bad_settings_are_named(settings, message):
    with pytest.raises(ValueError, match=message):
        HFBackend({"name": "x", "path": EMBEDDED}, **settings)


def test_model_config_without_path_is_refused():
    with pytest.raises(ValueError, match="path"):
        HFBackend({"name": "x"})


def test_max_tokens_below_one_is_refused(hf_backend):
    with pytest.raises(ValueError, match="max_tokens"):
        hf_backend.generate(["hi"], max_tokens=0)


def test_chat_messages_for_a_model_without_chat_template_are_refused(hf_backend):
    plain = copy.copy(hf_backend.tokenizer)
    plain.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        variant(hf_backend, tokenizer=plain).generate([CAPITAL], max_tokens=2)
    assert hf_backend.tokenizer.chat_template is not None


# --- the shared-prefix KV cache of greedy decoding ---------------------------------------------

def react_prompts(n: int = 4) -> list[str]:
    """Prompted ReAct prompts as rollouts build them: the ~950-token few-shot examples, a
    question, and for some an earlier round, so the suffixes differ in length."""
    from fireact.formats import FewShot
    from fireact.tasks import HotpotQA
    from fireact.trajectory import Step

    task = HotpotQA(n=n, shuffle_seed=233)
    examples = task.prompt("react")
    earlier = [Step("I need to search it.", "search", "Irene Jacob", "Irène Jacob is a French-Swiss actress.")]
    return [FewShot().prompt(q.question, earlier if i % 2 else [], examples) for i, q in enumerate(task.questions())]


def test_slots_grow_as_replies_outrun_their_room_and_decode_the_same(hf_backend, monkeypatch):
    """A slot starts with room for REPLY_ROOM reply tokens, not max_tokens: a longer reply grows
    the batch's columns at a decoding step, and the completions stay the ones each prompt gets
    alone with the default room."""
    one_by_one = [hf_backend.generate([p], max_tokens=12)[0] for p in PROMPTS]
    monkeypatch.setattr(batch_module, "REPLY_ROOM", 2)
    backend = variant(hf_backend, _prefixes=type(hf_backend._prefixes)(), _history=HistoryCache(0))
    grown = []
    reserve = SlotLayer.reserve
    monkeypatch.setattr(SlotLayer, "reserve", lambda layer, *a, **kw: (grown.append(a[1]), reserve(layer, *a, **kw))[1])
    assert backend.generate(PROMPTS, max_tokens=12) == one_by_one
    widest = max(len(hf_backend.encode(p)) for p in PROMPTS)
    assert min(grown) < widest + 12 and len(set(grown)) > 1  # less room at first, more as replies grew


def test_prefix_cached_greedy_equals_plain_one_prompt_at_a_time(hf_backend):
    prompts = react_prompts()
    stop = ["\nObservation:"]
    plain = variant(hf_backend, prefix_cache_size=0, _prefixes={})
    one_by_one = [plain.generate([p], stop=stop, max_tokens=12)[0] for p in prompts]
    assert not plain._prefixes  # no cache was made

    cached = variant(hf_backend, _prefixes=type(hf_backend._prefixes)())
    assert cached.generate(prompts, stop=stop, max_tokens=12) == one_by_one
    shared = next(iter(cached._prefixes))
    assert len(cached._prefixes) == 1 and len(shared) > 900  # the few-shot examples, encoded once
    assert all(list(shared) == hf_backend.encode(p)[: len(shared)] for p in prompts)
    # A later call (the next round, or one prompt alone: a re-ask) reuses it and decodes the same.
    assert cached.generate(prompts[::-1], stop=stop, max_tokens=12) == one_by_one[::-1]
    assert cached.generate(prompts[1:2], stop=stop, max_tokens=12) == one_by_one[1:2]
    assert list(cached._prefixes) == [shared]


def generate_counting(backend: HFBackend, prompts, **settings):
    """The completions, and the number of columns each forward fed."""
    widths = []
    hook = backend.lm.register_forward_pre_hook(lambda _, args, kwargs: widths.append(kwargs["input_ids"].shape[1]),
                                                with_kwargs=True)
    try:
        completions = backend.generate(prompts, **settings)
    finally:
        hook.remove()
    return completions, widths


def test_a_next_round_loads_its_history_and_encodes_only_its_new_tokens(hf_backend):
    """Each question's next prompt (its last prompt, the reply, an observation) finds its own
    tokens' keys and values kept from the last round: the first forward feeds only the new
    tokens, and the completions are those of a backend that encodes every prompt whole; a new
    question in the same batch (no history) is encoded whole beside them."""
    settings = {"stop": ["\nObservation:"], "max_tokens": 12}
    prompts = react_prompts()
    with_history = variant(hf_backend, _prefixes=type(hf_backend._prefixes)(), _history=HistoryCache(16384))
    whole = variant(hf_backend, prefix_cache_size=0, _prefixes={}, _history=HistoryCache(0))
    first = with_history.generate(prompts[:3], **settings)
    assert first == whole.generate(prompts[:3], **settings)
    later = [p + c.text + "\nObservation: It is a city in France.\nThought:" for p, c in zip(prompts, first)]
    (loaded, loaded_widths), (encoded, whole_widths) = (generate_counting(b, later, **settings) for b in (with_history, whole))
    assert loaded == encoded
    new_tokens = max(len(hf_backend.encode(n)) - len(hf_backend.encode(p)) for n, p in zip(later, prompts))
    assert loaded_widths[0] <= new_tokens < whole_widths[0] // 4  # whole: the examples and the question again

    mixed = later[:2] + prompts[3:]  # two next rounds and a first one
    fresh = variant(with_history, _history=HistoryCache(16384))
    fresh.generate(prompts[:2], **settings)
    assert fresh.generate(mixed, **settings) == whole.generate(mixed, **settings)


def test_history_cache_takes_the_longest_match_once_and_keeps_its_capacity():
    layers = lambda n: [(torch.arange(n, dtype=torch.float32).reshape(1, 1, n, 1),) * 2]
    cache = HistoryCache(capacity=10)
    cache.put(History((1, 2, 3, 4, 5, 6), 2, layers(4)))  # own tokens 3, 4, 5, 6
    cache.put(History((1, 2, 3, 9), 2, layers(2)))
    taken = cache.take([1, 2, 3, 4, 5, 7, 8], start=3)  # the first covers 4, 5 after this prompt's own start
    assert len(taken) == 2 and taken.tokens == (1, 2, 3, 4, 5)
    assert taken.layer(0, 2)[0].flatten().tolist() == [1.0, 2.0]  # its values for tokens 4 and 5
    assert len(cache.take([1, 2, 3, 4, 5, 7, 8], start=3)) == 0  # taken once; the other covers nothing here
    assert len(cache.take([1, 2, 3, 4], start=1)) == 0  # kept from a longer prefix than this prompt's
    assert len(cache.take([1, 2, 3, 9, 0], start=2)) == 2
    for n in (6, 6):  # 12 own tokens over the capacity of 10: the older goes
        cache.put(History(tuple(range(n + 1)), 1, layers(n)))
    assert len(cache.take(list(range(7)) + [99], start=1)) == 6 and len(cache.take(list(range(8)), start=1)) == 0
    cache.put(History(tuple(range(20)), 1, layers(19)))  # larger than the whole capacity: not kept
    assert len(cache.take(list(range(21)), start=1)) == 0
    cache.put(History((1, 2, 3, 4, 5, 6, 7), 1, layers(6)))  # a re-ask: the same prompt, shorter than its history
    assert len(cache.take([1, 2, 3, 4], start=1)) == 2  # all but the prompt's last token, which is fed


def test_prefix_cache_keeps_the_most_recent_prefixes(hf_backend):
    cached = variant(hf_backend, prefix_cache_size=1, _prefixes=type(hf_backend._prefixes)())
    long_a, long_b = "The history of the Roman Empire " * 8, "A short guide to growing tomatoes " * 8
    cached.generate([long_a + "began", long_a + "ended"], max_tokens=2)
    first = next(iter(cached._prefixes))
    cached.generate([long_b + "in spring", long_b + "in summer"], max_tokens=2)
    assert list(cached._prefixes) != [first] and len(cached._prefixes) == 1
    # Prompts that share less than MIN_SHARED_PREFIX tokens make no cache entry.
    short = variant(hf_backend, _prefixes=type(hf_backend._prefixes)())
    short.generate(PROMPTS, max_tokens=2)
    assert not short._prefixes


def test_stop_criterion_is_built_once_per_stop_tuple(hf_backend):
    backend = variant(hf_backend, _stop_criteria={})
    backend.generate(["The capital of France is"], stop=["\n", " Paris"], max_tokens=3)
    criterion = backend._stop_criteria[("\n", " Paris")]
    backend.generate(["Once upon a time"], stop=["\n", " Paris"], max_tokens=3)
    assert backend._stop_criteria == {("\n", " Paris"): criterion}


def test_negative_prefix_cache_size_is_refused():
    with pytest.raises(ValueError, match="prefix_cache_size"):
        HFBackend({"name": "x", "path": EMBEDDED}, prefix_cache_size=-1)


@pytest.mark.parametrize("queries", [1, 5, 9])  # 9: every own token, so row 0's first queries see none of them
@pytest.mark.parametrize("padded", [True, False])
def test_shared_prefix_attention_equals_sdpa_over_the_joined_keys(queries, padded):
    """The prefix kept once gives what sdpa gives with the prefix copied into every row."""
    from types import SimpleNamespace

    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from fireact.llm.hf.attention import shared_prefix_attention

    torch.manual_seed(0)
    rows, heads, kv_heads, dim, prefix, own = 3, 6, 2, 8, 7, 9
    module = SimpleNamespace(layer_idx=1, num_key_value_groups=heads // kv_heads, is_causal=True, training=False)
    query = torch.randn(rows, heads, queries, dim)
    key, value = torch.randn(rows, kv_heads, own, dim), torch.randn(rows, kv_heads, own, dim)
    prefix_kv = [None, (torch.randn(1, kv_heads, prefix, dim), torch.randn(1, kv_heads, prefix, dim))]
    causal = torch.ones(queries, own, dtype=torch.bool).tril(own - queries).expand(rows, 1, queries, own).clone()
    if padded:  # left padding: row 0 has 3 padding tokens, row 2 has 1
        causal[0, :, :, :3] = False
        causal[2, :, :, :1] = False
    mask = causal if padded else None

    ours, _ = shared_prefix_attention(module, query, key, value, mask, scaling=dim**-0.5, shared_prefix=prefix_kv)
    joined = lambda shared, own_part: torch.cat([shared.expand(rows, -1, -1, -1), own_part], dim=-2)
    visible = torch.ones(rows, 1, queries, prefix, dtype=torch.bool)
    reference, _ = sdpa_attention_forward(
        module, query, joined(prefix_kv[1][0], key), joined(prefix_kv[1][1], value),
        torch.cat([visible, causal], dim=-1), scaling=dim**-0.5,
    )
    assert ours.shape == reference.shape == (rows, queries, heads, dim)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("queries", [1, 5])
@pytest.mark.parametrize("padded", [True, False])
def test_attention_without_a_prefix_equals_sdpa(queries, padded):
    """No shared prefix (zero-shot prompts): the grouped queries over each row's own tokens give
    what transformers' sdpa gives with the keys repeated for every query head."""
    from types import SimpleNamespace

    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from fireact.llm.hf.attention import shared_prefix_attention

    torch.manual_seed(0)
    rows, heads, kv_heads, dim, own = 3, 6, 2, 8, 9
    module = SimpleNamespace(layer_idx=0, num_key_value_groups=heads // kv_heads, is_causal=True, training=False)
    query = torch.randn(rows, heads, queries, dim)
    key, value = torch.randn(rows, kv_heads, own, dim), torch.randn(rows, kv_heads, own, dim)
    causal = torch.ones(queries, own, dtype=torch.bool).tril(own - queries).expand(rows, 1, queries, own).clone()
    if padded:
        causal[0, :, :, :3] = False
    ours, _ = shared_prefix_attention(module, query, key, value, causal if padded else None, scaling=dim**-0.5)
    reference, _ = sdpa_attention_forward(module, query, key, value, causal, scaling=dim**-0.5)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)


def test_flash_and_plain_attention_agree_with_their_normalisers():
    """The CPU kernel and the plain computation (used on other devices) give the same output and
    logsumexp; a query that sees no key gives output 0 with both."""
    from fireact.llm.hf.attention import flash_attend_cpu, plain_attend

    torch.manual_seed(0)
    query, key, value = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 6, 8), torch.randn(2, 3, 6, 8)
    visible = torch.ones(2, 1, 4, 6, dtype=torch.bool).tril(2)
    visible[1, :, :, :4] = False  # row 1's first query sees nothing
    for mask in (visible, None):
        (flash, flash_norm), (plain, plain_norm) = (f(query, key, value, mask, 8**-0.5) for f in (flash_attend_cpu, plain_attend))
        torch.testing.assert_close(flash, plain, rtol=1e-5, atol=1e-6)
        seen = mask.any(-1).expand(2, 3, 4) if mask is not None else torch.ones(2, 3, 4, dtype=torch.bool)
        torch.testing.assert_close(flash_norm[seen], plain_norm[seen], rtol=1e-5, atol=1e-6)
        if mask is not None:
            assert not flash[1, :, 0].any() and not plain[1, :, 0].any()


def test_buffer_layer_refuses_to_overflow():
    from fireact.llm.hf.caches import BufferLayer

    layer = BufferLayer(capacity=4)
    keys = torch.zeros(2, 1, 3, 8)
    out, _ = layer.update(keys, keys)
    assert out.shape == (2, 1, 3, 8) and layer.get_seq_length() == 3
    with pytest.raises(RuntimeError, match="holds 4 tokens; 5 were written"):
        layer.update(keys[:, :, :2], keys[:, :, :2])


def test_rollout_streams_give_the_same_greedy_trajectories_alone_together_or_in_rounds(hf_backend):
    """The rollout engine batches whatever requests are ready (questions at different rounds,
    re-asks): with the real model, recorded search and few-shot ReAct, every trajectory is the
    one the question gets alone and the one the round barrier gives, with the prefix and history
    caches (together, in rounds) or without (alone: every prompt encoded whole, the paper's way)."""
    whole = variant(hf_backend, prefix_cache_size=0, _prefixes={}, _history=HistoryCache(0))
    runs = three_ways(hf_backend, alone_llm=whole)
    assert runs["together"] == runs["alone"] == runs["in_rounds"]
    assert sum(len(t["steps"]) for t in runs["together"]) > 4  # more than one round each


def test_a_request_joins_the_running_batch_and_leaves_it_when_done(hf_backend):
    """Continuous batching: a request submitted while another decodes joins it at the next step,
    comes back as soon as its own reply ends (before the long one), and both completions equal
    the ones each prompt gets alone. The batch then compacts (free slots leave it)."""
    backend = variant(hf_backend, _prefixes=type(hf_backend._prefixes)(), _history=HistoryCache(0))
    long_alone = backend.generate([PROMPTS[3]], max_tokens=30)[0]
    short_alone = backend.generate([PROMPTS[0]], max_tokens=4)[0]
    backend.submit("long", PROMPTS[3], max_tokens=30)
    finished = dict(backend.step() + backend.step() + backend.step())  # the long one's first tokens
    backend.submit("short", PROMPTS[0], max_tokens=4)
    steps = 0
    while "short" not in finished:
        finished.update(backend.step())
        steps += 1
    assert "long" not in finished and steps <= 4 and finished["short"] == short_alone
    assert len(backend._batch.rows) == 1  # compacted: half its slots were free and none was waiting
    while backend.running:
        finished.update(backend.step())
    assert finished["long"] == long_alone and backend._batch is None
    with pytest.raises(RuntimeError, match="take them with step"):
        backend.submit("left", PROMPTS[0], max_tokens=2)
        backend.generate([PROMPTS[1]], max_tokens=2)


def test_a_request_without_the_batch_prefix_waits_and_no_later_one_passes_it(hf_backend):
    """The running batch's rows share its prefix's cache, so a prompt that does not start with it
    waits for the batch to end; requests after it wait too (first come, first served), then
    everything completes."""
    backend = variant(hf_backend, _prefixes=type(hf_backend._prefixes)(), _history=HistoryCache(0))
    backend.submit("a", REACT + " Paris", max_tokens=6)
    backend.submit("b", REACT + " France", max_tokens=6)
    finished = dict(backend.step())  # a and b start a batch with their common prefix (the ReAct text)
    assert backend._batch.prefix > 32
    backend.submit("other", PROMPTS[0], max_tokens=3)
    backend.submit("c", REACT + " Europe", max_tokens=3)
    finished.update(backend.step())
    assert backend._batch.active() == 2 and [row.key for row in backend._waiting] == ["other", "c"]
    while backend.running:
        finished.update(backend.step())
    assert set(finished) == {"a", "b", "other", "c"}
    assert finished["other"] == backend.generate([PROMPTS[0]], max_tokens=3)[0]


def test_a_completion_carries_the_tokens_it_sampled_and_their_logprobs(hf_backend, react_free):
    """The sampled ids run through the token that completed the stop string; their decoding, cut
    there, is the text; each log-probability is the token's under the distribution it was drawn
    from (greedy: the model's own), as a full forward over prompt + ids gives it."""
    [stopped] = hf_backend.generate([REACT], stop=["\nObservation:"], max_tokens=64)
    assert hf_backend.decode(stopped.token_ids).startswith(stopped.text + "\nObservation:")
    assert len(stopped.token_ids) == len(stopped.logprobs) == stopped.completion_tokens
    prompt = hf_backend.encode(REACT)
    with torch.no_grad():
        logits = hf_backend.lm(torch.tensor([prompt + stopped.token_ids])).logits[0, len(prompt) - 1 : -1]
    expected = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(stopped.token_ids)[:, None])[:, 0]
    assert stopped.logprobs == pytest.approx(expected.tolist(), abs=1e-3)
    # Sent back as token ids, the prompt is taken as it is: the same greedy reply.
    assert hf_backend.generate([TokenIds(prompt)], stop=["\nObservation:"], max_tokens=64) == [stopped]


def test_sampled_logprobs_are_under_the_temperature(hf_backend):
    hot = variant(hf_backend, temperature=2.0)
    [sampled] = hot.generate(["The capital of France is"], max_tokens=6, seeds=[3])
    prompt = hf_backend.encode("The capital of France is")
    with torch.no_grad():
        logits = hf_backend.lm(torch.tensor([prompt + sampled.token_ids])).logits[0, len(prompt) - 1 : -1]
    expected = torch.log_softmax(logits.float() / 2.0, -1).gather(-1, torch.tensor(sampled.token_ids)[:, None])[:, 0]
    assert sampled.logprobs == pytest.approx(expected.tolist(), abs=1e-3)
