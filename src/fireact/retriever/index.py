"""The retrievers a server searches a corpus with, each a `index=` config (conf/index/), built once
for a corpus' content and kept in <cache_dir>/retriever/, so a server that starts again over the
same file loads its index instead of building it:

- `BM25Index` (index=bm25): bm25s; lower-cased word tokens, English stop words, Lucene's scoring
  as bm25s computes it.
- `DenseIndex` (index=e5): an e5-style encoder through transformers, as Search-R1's retrieval
  server runs it: "query: " and "passage: " prefixes, mean pooling, unit vectors, inner product.
  Exact search over every passage: right for corpora up to about a million passages; for the
  21M of wiki-18, Search-R1's own server with a faiss index (tool=retriever talks to it unchanged).

Each has `name` (what /info reports as the retriever), `corpus`, `corpus_hash`, `passages`,
`built` (this process built the index; False: loaded from the cache) and `search`."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import time
from pathlib import Path

import bm25s
import numpy as np
import torch
from filelock import FileLock

from fireact import paths
from fireact.retriever.corpus import Passage, read_corpus

log = logging.getLogger(__name__)


def tokenize(texts: list[str]) -> list[list[str]]:
    return bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False)


class BM25Index:
    """The passages of `corpus` (a JSONL file) and their BM25 index; `built` says whether this
    process built it (False: it was loaded from the cache)."""

    name = "bm25"

    def __init__(self, corpus: str | Path, cache_dir: str | Path | None = None):
        self.corpus = Path(corpus)
        self.corpus_hash = paths.file_hash(self.corpus)
        self.passages: list[Passage] = read_corpus(self.corpus)
        folder = Path(cache_dir or paths.cache_dir() / "retriever") / f"bm25-{self.corpus_hash}"
        started = time.perf_counter()
        folder.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{folder}.lock"):  # two servers starting over one corpus build it once
            self.built = not (folder / "params.index.json").exists()
            if self.built:
                self._build(folder)
            self.index = bm25s.BM25.load(str(folder), mmap=True, show_progress=False)
        self._lock = threading.Lock()  # bm25s' retrieve is not documented as thread-safe
        log.info("%s: %d passages, index %s in %.1fs (%s)", self.corpus, len(self.passages),
                 "built" if self.built else "loaded", time.perf_counter() - started, folder)

    def _build(self, folder: Path) -> None:
        index = bm25s.BM25()
        index.index(tokenize([p.contents for p in self.passages]), show_progress=False)
        tmp = folder.with_name(f".{folder.name}.{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        index.save(str(tmp), show_progress=False)
        tmp.replace(folder)

    def search(self, queries: list[str], k: int) -> list[list[tuple[Passage, float]]]:
        """The k best passages of each query with their scores, best first; passages that share no
        term with the query (score 0) are left out."""
        k = min(k, len(self.passages))
        tokens = tokenize(queries)
        found: list[list[tuple[Passage, float]]] = [[] for _ in queries]
        asked = [i for i, t in enumerate(tokens) if t]
        if not asked or k < 1:
            return found
        with self._lock:
            ids, scores = self.index.retrieve([tokens[i] for i in asked], k=k, show_progress=False, n_threads=1)
        for row, i in enumerate(asked):
            found[i] = [(self.passages[int(doc)], float(score))
                        for doc, score in zip(ids[row], scores[row]) if score > 0 and np.isfinite(score)]
        return found


class DenseIndex:
    """The passages of `corpus` embedded by `encoder` (a hub name or a local folder of a
    transformers encoder), the embeddings cached per (corpus, encoder, max_length)."""

    def __init__(self, corpus: str | Path, encoder: str = "intfloat/e5-base-v2", max_length: int = 256,
                 batch_size: int = 64, cache_dir: str | Path | None = None):
        from transformers import AutoModel, AutoTokenizer

        self.corpus = Path(corpus)
        self.corpus_hash = paths.file_hash(self.corpus)
        self.passages: list[Passage] = read_corpus(self.corpus)
        self.name = f"dense:{encoder}"
        self.max_length, self.batch_size = max_length, batch_size
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(encoder)
            self.model = AutoModel.from_pretrained(encoder).eval()
        except OSError as err:
            raise ValueError(f"index.encoder={encoder!r} could not be loaded ({str(err).splitlines()[0]}); download it "
                             f"where the hub is reachable (`hf download {encoder}`) and set index.encoder to its "
                             f"folder, or use index=bm25 (no encoder)") from None
        if self.tokenizer.pad_token is None:  # a decoder-only encoder: pad with its end token
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # The encoder's last name part to read, and a hash of the whole name: two local folders
        # both called `model` are two encoders.
        slug = "".join(c if c.isalnum() else "-" for c in encoder.strip("/").split("/")[-1])
        named = hashlib.sha256(encoder.encode()).hexdigest()[:8]
        path = (Path(cache_dir or paths.cache_dir() / "retriever")
                / f"dense-{slug}-{named}-{max_length}-{self.corpus_hash}.npy")
        started = time.perf_counter()
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{path}.lock"):
            self.built = not path.exists()
            if self.built:
                embeddings = self.encode([p.contents for p in self.passages], "passage: ")
                tmp = path.with_name(f".{path.stem}.{os.getpid()}.npy")
                np.save(tmp, embeddings)
                tmp.replace(path)
            self.embeddings = np.load(path, mmap_mode="r")
        self._lock = threading.Lock()
        log.info("%s: %d passages, %s embeddings %s in %.1fs (%s)", self.corpus, len(self.passages), encoder,
                 "computed" if self.built else "loaded", time.perf_counter() - started, path)

    @torch.inference_mode()
    def encode(self, texts: list[str], prefix: str) -> np.ndarray:
        """Unit vectors of `texts` with e5's prefix, mean-pooled over their tokens, float32."""
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer([prefix + t for t in texts[start:start + self.batch_size]], max_length=self.max_length,
                                   padding=True, truncation=True, return_tensors="pt")
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).float().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.model.config.hidden_size), np.float32)

    def search(self, queries: list[str], k: int) -> list[list[tuple[Passage, float]]]:
        """The k passages nearest each query (inner product of unit vectors), best first; an empty
        query finds none."""
        k = min(k, len(self.passages))
        found: list[list[tuple[Passage, float]]] = [[] for _ in queries]
        asked = [i for i, q in enumerate(queries) if q.strip()]
        if not asked or k < 1:
            return found
        with self._lock:  # one forward pass at a time: the server answers from a thread pool
            scores = self.encode([queries[i] for i in asked], "query: ") @ np.asarray(self.embeddings).T
        for row, i in enumerate(asked):
            best = np.argpartition(-scores[row], k - 1)[:k]
            best = best[np.argsort(-scores[row][best])]
            found[i] = [(self.passages[int(doc)], float(scores[row][doc])) for doc in best]
        return found
