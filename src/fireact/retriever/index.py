"""BM25 over a corpus (bm25s; lower-cased word tokens, English stop words, Lucene's scoring as
bm25s computes it), built once for a corpus' content and kept in <cache_dir>/retriever/, so a
server that starts again over the same file loads the index instead of building it."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path

import bm25s
import numpy as np
from filelock import FileLock

from fireact import paths
from fireact.retriever.corpus import Passage, content_hash, read_corpus

log = logging.getLogger(__name__)


def tokenize(texts: list[str]) -> list[list[str]]:
    return bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False)


class BM25Index:
    """The passages of `corpus` (a JSONL file) and their BM25 index; `built` says whether this
    process built it (False: it was loaded from the cache)."""

    name = "bm25"

    def __init__(self, corpus: str | Path, cache_dir: str | Path | None = None):
        self.corpus = Path(corpus)
        self.corpus_hash = content_hash(self.corpus)
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
