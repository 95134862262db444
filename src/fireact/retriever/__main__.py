"""`python -m fireact.retriever [corpus=PATH] [port=N]`: Search-R1's retrieval API on this machine
(conf/retriever.yaml), over a JSONL corpus or, by default, the offline corpus built from the
released data. Agents use it with `tool=retriever tool.tool.url=http://HOST:PORT/retrieve`."""

from __future__ import annotations

import logging

import uvicorn
from hydra.utils import instantiate
from omegaconf import DictConfig

from fireact.entry import stage_main
from fireact.retriever.corpus import released_corpus
from fireact.retriever.server import make_app

log = logging.getLogger(__name__)


def serve(cfg: DictConfig) -> None:
    if not isinstance(cfg.topk, int) or cfg.topk < 1:
        raise ValueError(f"topk={cfg.topk!r}: the passages a query gets by default must be an integer >= 1")
    corpus = cfg.corpus or released_corpus()
    index = instantiate(cfg.index, corpus=corpus)
    print(f"retriever: {len(index.passages)} passages of {corpus} ({index.name}); "
          f"POST http://{cfg.host}:{cfg.port}/retrieve  (tool=retriever tool.tool.url=http://{cfg.host}:{cfg.port}/retrieve)",
          flush=True)
    uvicorn.run(make_app(index, cfg.topk), host=cfg.host, port=cfg.port, log_level=cfg.log_level)


@stage_main("retriever")
def main(cfg: DictConfig) -> None:
    serve(cfg)


if __name__ == "__main__":
    main()
