"""The `hf` backend: local generation with transformers on CPU or GPU (`HFBackend`).

The model is loaded once (a hub id, a local or merged checkpoint folder, or the embedded
default), optionally with a PEFT adapter merged in. Prompts are tokenized (chat message lists
through the tokenizer's chat template) and batched continuously: a submitted request joins the
running batch at the next `step` (`RunningBatch`: a slot per request, up to batch_size) and
leaves it when its reply ends; transformers' own stop-string criterion (built once per tuple of
stop strings) ends each sequence at its first stop string, and the text is cut there and at
end-of-sequence.

Decoding (greedy or sampled) reuses a shared prefix: agents' prompts all start with the same few-shot
examples, so the longest common token prefix of the requests that start a batch is encoded once
and its KV cache kept (a few, least recently used first out) for later batches that start with
it; a request joins a running batch only if it starts with that batch's prefix. The prefix's
keys and values stay one row: `shared_prefix_attention` (registered with transformers as the
model's attention) attends to them and to each row's own tokens, so a forward reads the prefix
once for the whole batch and never copies it into rows. Newcomers' own tokens are encoded in a
forward of their own, laid out [left padding][own tokens] (`BufferLayer`), then copied into
their slots (`SlotLayer`), where a row's own tokens start at column 0 and each decoding step
writes every row's token at that row's own column, masked per row, with position ids continuing
from the prefix; greedy, it gives the same tokens as `generate` up to float rounding. Sampling
draws each row from its temperature-scaled, top-p-cut distribution with its own generator,
seeded by the request's seed, so a prompt and a seed give the same completion whatever else
shares the batch.

An agent's next prompt is its last one extended (the reply, the observation): each request's own
KV cache (its tokens after the shared prefix, and the generated tokens fed back) is kept after
decoding (`HistoryCache`), and a later prompt that starts with those tokens loads them into its
row instead of encoding them again, so a question's next round encodes only its new tokens
(with the same tokens, greedy, as encoding it whole, up to float rounding).

Modules: backend (HFBackend: loading, the request queue, prefill, decoding), batch (the running
batch and its slot buffers), caches (the newcomers' buffer and the history cache), attention
(shared_prefix_attention, registered with transformers when a backend is built), memory (glibc
settings for a CPU process). Importing the package does nothing else.
"""

from fireact.llm.hf.backend import HFBackend

__all__ = ["HFBackend"]
