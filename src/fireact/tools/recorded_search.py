"""Replays the real Google results recorded in the released FireAct data: the offline search tool.

Every `search[q]` step with an observation in the released fine-tuning sets and evaluation
trajectories is a real SerpAPI answer for q (about 15,400 calls, 4,879 distinct queries).

Lookup of a query:
1. Exact: the query normalised (Unicode NFKC, case-folded, runs of white space made one
   space, ends trimmed; punctuation is kept, as quotes and signs change a Google query)
   equals a recorded query's normalisation. A query recorded with different observations
   (18 are) answers with the one recorded most often; ties go to the one recorded first,
   reading the files in the configured order (sorted within each pattern), records and
   steps in order.
2. Otherwise BM25 (bm25s, English stop words) over one document per distinct recorded
   query, "query observation", leaving out queries whose observation is "None". The best
   score wins, ties to the query recorded first; a query sharing no term with any document
   gets "None", what the real tool said when Google had no answer.

The corpus and its index are built once per process for a given set of files (~0.6 s).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import bm25s
import numpy as np

from fireact import paths
from fireact.tools.base import EMPTY_QUERY, NO_RESULT, Tool
from fireact.trajectory_files import ReadReport, read_alpaca, read_chat, read_released_eval
from fireact.trajectory import Trajectory

log = logging.getLogger(__name__)

Reader = Callable[[Path], tuple[list[Trajectory], ReadReport]]
READERS: dict[str, Reader] = {"alpaca": read_alpaca, "chat": read_chat, "eval": read_released_eval}


def normalise_query(query: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", query).casefold().split())


def recorded_searches(files: Iterable[tuple[str, Path]]) -> Iterator[tuple[str, str]]:
    """(query, observation) for every search step with an observation, in file order."""
    for fmt, path in files:
        trajectories, report = READERS[fmt](path)
        report.warn()
        for trajectory in trajectories:
            for step in trajectory.steps:
                if step.action.lower() == "search" and step.argument is not None and step.observation is not None:
                    yield step.argument, step.observation


def _tokenize(texts: list[str]) -> list[list[str]]:
    return bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False)


@dataclass
class RecordedCorpus:
    """Distinct normalised queries (first-recorded order) with their chosen observation."""

    answers: dict[str, str]
    searches: int

    def __post_init__(self) -> None:
        self.documents = [query for query, observation in self.answers.items() if observation != NO_RESULT]
        self.index = bm25s.BM25()
        self.index.index(_tokenize([f"{query} {self.answers[query]}" for query in self.documents]), show_progress=False)

    @classmethod
    def from_searches(cls, searches: Iterable[tuple[str, str]]) -> RecordedCorpus:
        recorded: dict[str, Counter[str]] = {}
        total = 0
        for query, observation in searches:
            recorded.setdefault(normalise_query(query), Counter())[observation] += 1
            total += 1
        # Counter keeps first-seen order and max() returns the first maximum: the tie rule.
        answers = {query: max(counts, key=counts.__getitem__) for query, counts in recorded.items() if query}
        return cls(answers, total)

    def lookup(self, query: str) -> str:
        """The observation for an already normalised, non-empty query."""
        if query in self.answers:
            return self.answers[query]
        tokens = _tokenize([query])[0]
        if not tokens or not self.documents:
            return NO_RESULT
        scores = self.index.get_scores(tokens)
        best = int(np.argmax(scores))
        return self.answers[self.documents[best]] if scores[best] > 0 else NO_RESULT


_load_lock = threading.Lock()


@lru_cache(maxsize=4)
def _load_corpus(files: tuple[tuple[str, Path], ...]) -> RecordedCorpus:
    corpus = RecordedCorpus.from_searches(recorded_searches(files))
    log.info("recorded_search: %d searches, %d distinct queries from %d files", corpus.searches, len(corpus.answers), len(files))
    return corpus


def load_corpus(files: tuple[tuple[str, Path], ...]) -> RecordedCorpus:
    with _load_lock:  # threads starting together build it once
        return _load_corpus(files)


def recorded_files_hash(files: tuple[tuple[str, Path], ...]) -> str:
    """12 hex digits naming the content of the recorded files (their order included)."""
    return hashlib.sha256("".join(paths.file_hash(path) for _, path in files).encode()).hexdigest()[:12]


def recorded_files(alpaca_files: Sequence[str] = ("finetune/alpaca_format/*.json",),
                   chat_files: Sequence[str] = ("finetune/gpt_format/*.jsonl",),
                   eval_files: Sequence[str] = ("trajs/*.json",),
                   data_dir: str | None = None) -> tuple[tuple[str, Path], ...]:
    """(format, path) of the released files the recorded searches are read from: the glob patterns,
    relative to `data_dir` (default fireact.paths.data_dir()), sorted within each."""
    root = Path(data_dir) if data_dir else paths.data_dir()
    patterns = {"alpaca": alpaca_files, "chat": chat_files, "eval": eval_files}
    files = tuple((fmt, path) for fmt, globs in patterns.items() for pattern in globs for path in sorted(root.glob(pattern)))
    if not files:
        raise FileNotFoundError(
            f"recorded_search found no files for {dict(patterns)} under {root}; "
            "point FIREACT_DATA_DIR (or tool.data_dir) at the folder holding the released data"
        )
    return files


class RecordedSearch(Tool):
    """search[query] answered from the recorded Google results; offline and deterministic.

    Each `*_files` is a list of glob patterns relative to `data_dir` (default
    fireact.paths.data_dir()), read with the matching trajectory reader.
    """

    name = "recorded_search"
    actions = ("search",)

    def __init__(
        self,
        alpaca_files: Sequence[str] = ("finetune/alpaca_format/*.json",),
        chat_files: Sequence[str] = ("finetune/gpt_format/*.jsonl",),
        eval_files: Sequence[str] = ("trajs/*.json",),
        data_dir: str | None = None,
    ) -> None:
        self.files = recorded_files(alpaca_files, chat_files, eval_files, data_dir)
        self.corpus = load_corpus(self.files)

    def run(self, action: str, argument: str) -> str:
        self.check_action(action)
        query = normalise_query(argument)
        return self.corpus.lookup(query) if query else EMPTY_QUERY

    def result_config(self) -> dict[str, Any]:
        """The files by name and their content (not where they lie: the same data answers the same
        in any clone)."""
        return {"files": [f"{fmt}:{path.name}" for fmt, path in self.files], "content_hash": recorded_files_hash(self.files)}
