"""A retrieval corpus: JSONL passages {"id": ..., "contents": "title\ntext"}, the format of
Search-R1's and FlashRAG's Wikipedia corpora, so theirs serve here unchanged.

`released_corpus()` builds one offline from the released FireAct data: every distinct Google
observation recorded there (fireact.tools.recorded_search) is a passage, titled by the first
query that returned it (the recorded results carry no page titles). It is written once to the
cache folder, named by the content hash of the files it was read from.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from fireact import paths
from fireact.tools.base import NO_RESULT
from fireact.tools.recorded_search import recorded_files, recorded_files_hash, recorded_searches

FORMAT = 'one JSON object a line: {"id": "...", "contents": "title\\ntext"}'


@dataclass(frozen=True)
class Passage:
    id: str
    contents: str

    @property
    def title(self) -> str:
        return self.contents.split("\n", 1)[0]

    @property
    def text(self) -> str:
        return self.contents.split("\n", 1)[1] if "\n" in self.contents else ""

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "contents": self.contents}


def read_corpus(path: str | Path) -> list[Passage]:
    """Every passage of a corpus file; a line that is not a passage stops it, naming the line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"corpus={str(path)!r} is not a file; give a JSONL corpus ({FORMAT}), "
                                f"or corpus=null for the offline corpus built from the released data")
    passages = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                passages.append(Passage(str(record["id"]), str(record["contents"])))
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"corpus {path} line {number} is not a passage ({type(err).__name__}: {err}); "
                                 f"the format is {FORMAT}") from None
    if not passages:
        raise ValueError(f"corpus {path} holds no passages; the format is {FORMAT}")
    return passages


def write_corpus(path: Path, passages: list[Passage]) -> None:
    """Write atomically (a reader never sees half a corpus)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as out:
        for passage in passages:
            out.write(json.dumps(passage.to_dict(), ensure_ascii=False) + "\n")
    tmp.replace(path)


def released_passages(files: tuple[tuple[str, Path], ...]) -> list[Passage]:
    """Each distinct observation recorded in `files` (not "None"), in first-recorded order, titled by
    the first query that returned it."""
    first_query: dict[str, str] = {}
    for query, observation in recorded_searches(files):
        observation = observation.strip()
        if observation and observation != NO_RESULT:
            first_query.setdefault(observation, " ".join(query.split()))
    return [Passage(f"released-{number}", f"{title}\n{text}")
            for number, (text, title) in enumerate(first_query.items())]


def released_corpus(data_dir: str | None = None) -> Path:
    """The offline corpus file, written to <cache_dir>/corpora/ on first use."""
    files = recorded_files(data_dir=data_dir)
    path = paths.cache_dir() / "corpora" / f"released-{recorded_files_hash(files)}.jsonl"
    if not path.exists():
        write_corpus(path, released_passages(files))
    return path
