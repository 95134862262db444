"""Search-R1's retrieval API over an index, served with FastAPI:

    POST /retrieve {"queries": [...], "topk": k, "return_scores": bool}
      -> {"result": [[{"document": {"id", "contents"}, "score": s}, ...], ...]}   (return_scores)
      -> {"result": [[{"id", "contents"}, ...], ...]}                             (otherwise)
    GET /health -> {"status": "ok"};  GET /info -> the corpus, its hash, the retriever, the default topk

as Search-R1's retrieval_server.py answers (a missing or zero topk is the server's default),
so clients written for it (Search-R1, verl, SkyRL) work against this one. /info is ours: a
client records it, so that a result names the corpus and retriever it was measured with.
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from fireact.retriever.index import BM25Index, DenseIndex

MAX_QUERIES = 4096  # per request: more is a client bug, not a batch


class RetrieveRequest(BaseModel):
    queries: list[str]
    topk: int | None = None
    return_scores: bool = False


def make_app(index: BM25Index | DenseIndex, topk: int) -> FastAPI:
    app = FastAPI(title="fireact retriever")
    info = {"corpus": str(index.corpus), "corpus_hash": index.corpus_hash, "passages": len(index.passages),
            "retriever": index.name, "topk": topk}

    @app.post("/retrieve")
    def retrieve(request: RetrieveRequest) -> dict:
        if len(request.queries) > MAX_QUERIES:
            raise HTTPException(413, f"{len(request.queries)} queries in one request; at most {MAX_QUERIES}")
        k = request.topk or topk
        if k < 0:
            raise HTTPException(422, f"topk={k}: must be >= 1")
        found = index.search(request.queries, k)
        if request.return_scores:
            return {"result": [[{"document": p.to_dict(), "score": s} for p, s in hits] for hits in found]}
        return {"result": [[p.to_dict() for p, _ in hits] for hits in found]}

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/info")
    def describe() -> dict:
        return info

    return app
