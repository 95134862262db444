"""A local retrieval server with Search-R1's API (`python -m fireact.retriever`), and its corpora.

    corpus.py    JSONL passages {"id", "contents": "title\\ntext"}; the offline corpus from the released data
    index.py     BM25 over a corpus (bm25s), built once per corpus content and cached
    server.py    POST /retrieve {"queries", "topk", "return_scores"} -> {"result": [[{"document", "score"}]]}
    process.py   the server as a child process, up for a block (`serving`)
    __main__.py  the entry point (conf/retriever.yaml)

The agent's side is `tool=retriever` (fireact.tools.retriever), which talks to this server or to
any Search-R1-compatible one.
"""
