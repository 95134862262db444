"""A loopback search server with heavy-tailed latency, for the rollout bench's straggler runs.

It answers SerpAPI's /search with the recorded search's observation for the query as the answer
box, so fireact.tools.serpapi.SerpAPISearch pointed at it (base_url) reads back what
RecordedSearch says (`recorded`), over a real socket. Each call waits first: `slow_share` of the calls take
`slow_s`, the others `fast_s`. A call's draw is seeded by (seed, query, how many times that query
was asked before), so two engines making the same calls see the same delays in any order.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from fireact.tools.base import Tool


class SlowSearchServer:
    def __init__(self, recorded: Tool, fast_s: float = 0.02, slow_s: float = 3.0,
                 slow_share: float = 0.1, seed: int = 0):
        self.recorded, self.fast_s, self.slow_s, self.slow_share, self.seed = recorded, fast_s, slow_s, slow_share, seed
        self.calls, self.slow_calls = 0, 0
        self._asked: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"
        threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()

    def delay(self, query: str) -> float:
        with self._lock:
            draw = random.Random(repr((self.seed, query, self._asked[query]))).random()
            self._asked[query] += 1
            slow = draw < self.slow_share
            self.calls += 1
            self.slow_calls += slow
        return self.slow_s if slow else self.fast_s

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query).get("q", [""])[-1]
                time.sleep(server.delay(query))
                body = json.dumps({"answer_box": {"answer": server.recorded.run("search", query)}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        return Handler

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()

    def __enter__(self) -> "SlowSearchServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
