"""A loopback server (127.0.0.1 only) speaking the OpenAI fine-tuning endpoints the `openai`
finetune method uses: POST /v1/files (multipart upload), POST /v1/fine_tuning/jobs,
GET /v1/fine_tuning/jobs/{id}. A job moves validating_files -> running -> its final status
over successive retrievals. Faults are real: a queue of (path prefix, status, headers) replies
that are sent instead of the answer, once each, in order.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOST = "127.0.0.1"


@dataclass
class FineTuneState:
    final_status: str = "succeeded"  # or "failed"
    running_polls: int = 2  # retrievals that report "running" before the final status
    faults: list[tuple[str, int, dict]] = field(default_factory=list)
    files: dict[str, dict] = field(default_factory=dict)  # id -> {filename, purpose, content}
    jobs: dict[str, dict] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    polls: int = 0


def _job(job_id: str, request: dict, status: str, model: str | None, error: dict | None) -> dict:
    return {
        "id": job_id, "object": "fine_tuning.job", "created_at": 1700000000, "finished_at": None,
        "model": request["model"], "fine_tuned_model": model, "organization_id": "org-test",
        "result_files": [], "seed": request.get("seed") or 0, "status": status, "trained_tokens": None,
        "training_file": request["training_file"], "validation_file": None, "error": error,
        "hyperparameters": {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"},
        "method": request.get("method"),
    }


def make_handler(state: FineTuneState):
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, status: int, body: dict, headers: dict | None = None):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _fault(self) -> bool:
            with lock:
                state.requests.append((self.command, self.path))
                for index, (prefix, status, headers) in enumerate(state.faults):
                    if self.path.startswith(prefix):
                        del state.faults[index]
                        self._send(status, {"error": {"message": f"injected {status}", "type": "server_error"}}, headers)
                        return True
            return False

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length", 0)))

        def do_POST(self):
            body = self._body()
            if self._fault():
                return
            if self.path == "/v1/files":
                self._upload(body)
            elif self.path == "/v1/fine_tuning/jobs":
                request = json.loads(body)
                if request["training_file"] not in state.files:
                    self._send(400, {"error": {"message": "unknown training_file", "type": "invalid_request_error"}})
                    return
                job_id = f"ftjob-{len(state.jobs) + 1}"
                state.jobs[job_id] = request
                self._send(200, _job(job_id, request, "validating_files", None, None))
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def _upload(self, body: bytes):
            head = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
            parts = {part.get_param("name", header="content-disposition"): part for part in message.iter_parts()}
            upload = parts["file"]
            file_id = f"file-{len(state.files) + 1}"
            content = upload.get_payload(decode=True)
            state.files[file_id] = {"filename": upload.get_filename(), "purpose": parts["purpose"].get_content().strip(),
                                    "content": content}
            self._send(200, {"id": file_id, "object": "file", "bytes": len(content), "created_at": 1700000000,
                             "filename": upload.get_filename(), "purpose": "fine-tune", "status": "processed"})

        def do_GET(self):
            if self._fault():
                return
            prefix = "/v1/fine_tuning/jobs/"
            job_id = self.path[len(prefix):]
            if not self.path.startswith(prefix) or job_id not in state.jobs:
                self._send(404, {"error": {"message": f"no job {job_id}"}})
                return
            state.polls += 1
            request = state.jobs[job_id]
            if state.polls <= state.running_polls:
                self._send(200, _job(job_id, request, "running", None, None))
            elif state.final_status == "succeeded":
                self._send(200, _job(job_id, request, "succeeded", f"ft:{request['model']}:fireact::{job_id}", None))
            else:
                error = {"code": "invalid_training_file", "message": "Line 3: too few assistant messages", "param": "training_file"}
                self._send(200, _job(job_id, request, "failed", None, error))

    return Handler


class FineTuneServer:
    def __init__(self, state: FineTuneState):
        self.state = state
        self.httpd = ThreadingHTTPServer((HOST, 0), make_handler(state))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "FineTuneServer":
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
