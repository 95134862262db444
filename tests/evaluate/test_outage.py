"""An LLM server that is down is never a result. Against a real loopback OpenAI-compatible server
(tests/llm/servers.py) on one port: down before the run (nothing listens), the run stops before
any work; down mid-run, the questions it could not answer are left unwritten and the command
exits 3 with the line that resumes; up again, that command runs exactly those questions."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading

import pytest

from fireact.child_server import free_port
from fireact.errors import Unavailable
from fireact.evaluate.run import evaluate
from fireact.paths import REPO_ROOT
from fireact.tasks import HotpotQA
from fireact.trajectory_files import read_jsonl
from tests.llm.servers import FaultServer, Reply

N = 3


def answer(gold: dict[str, str], request: dict) -> Reply:
    return Reply(text=f" Easy.\nAction: finish[{next(g for q, g in gold.items() if q in request['prompt'])}]")


def test_an_outage_is_no_result_and_the_same_command_runs_its_questions_once_the_server_is_up(tmp_path, compose_cfg):
    gold = {q.question: q.gold for q in HotpotQA(shuffle_seed=233, n=N).questions()}
    port = free_port()
    out = tmp_path / "out"
    overrides = [f"task.n={N}", "in_flight=1", "method.max_rounds=2", "method.max_retries=0", "model=gpt35",
                 "model.path=served", "backend=openai", "backend.api=completions",
                 f"backend.base_url=http://127.0.0.1:{port}/v1", "backend.max_retries=1",
                 "backend.backoff_initial_s=0.01", "~tracker", f"output_dir={out}", f"hydra.run.dir={tmp_path / 'hydra'}"]

    # Down before the run: it stops in the check, before anything is written.
    with pytest.raises(Unavailable, match=f"LLM server at http://127.0.0.1:{port}/v1 cannot be reached"):
        evaluate(compose_cfg("evaluate", *overrides))
    assert not out.exists()

    # Down mid-run: the first question is answered, then the server hangs up and stops listening.
    def answer_once(attempt, request):
        if server.received[0].json is request:
            return answer(gold, request)
        threading.Thread(target=server.stop).start()
        return Reply(hang_up=True)

    command = [sys.executable, "-m", "fireact.evaluate", *overrides]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)])}
    with FaultServer(answer_once, port=port) as server:
        stopped = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert stopped.returncode == 3, stopped.stderr[-3000:]
    message = stopped.stderr[stopped.stderr.index("error:"):].splitlines()
    assert message[0].startswith(f"error: 2 of {N} questions were not run: LLM request failed: APIConnectionError")
    assert f"127.0.0.1:{port}/v1" in message[0] and "the same command runs the rest" in message[0]
    assert shlex.split(message[1]) == command  # the command that resumes: this interpreter, the module, the overrides
    assert "Traceback" not in stopped.stderr
    written, _ = read_jsonl(out / "trajectories.jsonl")
    assert len(written) == 1 and written[0].error is None and written[0].em == 1.0
    assert not (out / "summary.json").exists()  # no summary of a part of the questions

    # Up again on the same port: the same command runs the two questions left, and only those.
    with FaultServer(lambda attempt, request: answer(gold, request), port=port) as server:
        summary = evaluate(compose_cfg("evaluate", *overrides))
    assert len(server.received) == N - 1
    written, _ = read_jsonl(out / "trajectories.jsonl")
    assert sorted(t.qid for t in written) == sorted({t.qid for t in written}) and len(written) == N
    assert summary["n"] == N and summary["em"] == 1.0 and summary["failed"] == 0
