"""A run killed with SIGKILL midway resumes: the rerun of the same command runs only the
missing questions, every question ends up written exactly once, and the final metrics equal
those of a run that was never interrupted.

The default tests run `python -m fireact.evaluate` and `python -m fireact.generate` as real
subprocesses against a loopback OpenAI-compatible server (tests/llm/servers.py) that answers
deterministically: cheap, and real HTTP. The slow test does the same with the embedded model
and greedy decoding.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hydra.core.global_hydra import GlobalHydra

from fireact.paths import REPO_ROOT
from fireact.tasks import HotpotQA
from fireact.trajectory_files import read_jsonl
from tests.conftest import compose_config
from tests.llm.servers import FaultServer, Reply

N = 6
KILL_WAIT_S = 300  # readiness wait on a busy machine, not a speed check


class Teacher:
    """Answers the agent's prompts from the gold answers: question i finishes at once (i even),
    or searches first and then answers right (i % 4 == 1) or wrong (i % 4 == 3). While `held`,
    every request of the model named "held" but the first question's waits for `release`."""

    def __init__(self, questions):
        self.questions = questions
        self.held = False
        self.release = threading.Event()
        self.server = FaultServer(self.respond)

    def index(self, prompt: str) -> tuple[int, int]:
        """(question index, round) of a prompt: the question written last, observations after it."""
        at, i = max((prompt.rfind(q.question), i) for i, q in enumerate(self.questions))
        assert at >= 0, "the prompt holds none of the questions"
        return i, prompt[at:].count("\nObservation:") + 1

    def respond(self, attempt: int, request: dict) -> Reply:
        i, round_number = self.index(request["prompt"])
        if self.held and request["model"] == "held" and i > 0:
            self.release.wait(timeout=120)
        gold = self.questions[i].gold
        if i % 2 == 0:
            return Reply(text=f" I know this one.\nAction: finish[{gold}]")
        if round_number == 1:
            return Reply(text=f" I should look it up.\nAction: search[{self.questions[i].question[:40]}]")
        return Reply(text=f" Now I know.\nAction: finish[{gold if i % 4 == 1 else 'not ' + gold}]")

    def requested(self, model: str) -> set[int]:
        return {self.index(r.json["prompt"])[0] for r in self.server.received if r.json["model"] == model}


def overrides(base_url: str, model: str) -> list[str]:
    return [
        f"task.n={N}", "in_flight=1", "method.max_rounds=3", "method.max_retries=0", "model=gpt35",
        f"model.path={model}", "backend=openai", "backend.api=completions", f"backend.base_url={base_url}", "~tracker",
    ]


def command(entry: str, run_dir: Path, base_url: str, model: str) -> list[str]:
    return [sys.executable, "-m", f"fireact.{entry}", *overrides(base_url, model), f"hydra.run.dir={run_dir}"]


def run_in_process(entry: str, out_dir: Path, base_url: str, model: str) -> None:
    """The uninterrupted reference run, in this process (no second interpreter start)."""
    from fireact.evaluate.run import evaluate
    from fireact.generate import generate

    try:
        {"evaluate": evaluate, "generate": generate}[entry](compose_config(entry, overrides(base_url, model), out_dir=out_dir))
    finally:
        GlobalHydra.instance().clear()


def environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "MLFLOW_TRACKING_URI")}


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(cmd, cwd=REPO_ROOT, env=environment(), stdout=out, stderr=subprocess.STDOUT)


def kill_after_first_line(process: subprocess.Popen, written: list[Path], log: Path) -> None:
    deadline = time.monotonic() + KILL_WAIT_S
    while sum(lines(path) for path in written) < 1:
        assert process.poll() is None, f"the run ended before it could be killed:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"nothing written in {KILL_WAIT_S} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL


def finish(cmd: list[str], log: Path) -> None:
    process = start(cmd, log)
    assert process.wait(timeout=600) == 0, log.read_text()[-3000:]


def qids(paths: list[Path]) -> list[str]:
    return [t.qid for path in paths if path.exists() for t in read_jsonl(path)[0]]


def timeless(summary: dict) -> dict:
    """The summary's figures but its times (and its manifest, compared on its own)."""
    return {k: v for k, v in summary.items() if k not in ("time_per_trial", "latency_mean", "throughput", "manifest")}


@pytest.mark.parametrize("entry, files, split", [
    ("evaluate", ["trajectories.jsonl"], {"split": "dev", "shuffle_seed": 233}),
    ("generate", ["trajectories.jsonl", "failures.jsonl"], {"split": "train", "shuffle_seed": 0}),
])
def test_sigkill_midway_then_rerun_finishes_only_the_missing_questions(entry, files, split, tmp_path):
    questions = HotpotQA(**split, n=N).questions()
    teacher = Teacher(questions)
    with teacher.server:
        killed, reference = tmp_path / "killed", tmp_path / "reference"
        teacher.held = True
        victim = start(command(entry, killed, teacher.server.base_url, "held"), tmp_path / "killed.log")
        # The uninterrupted run, while the other starts (a model name the server never holds).
        run_in_process(entry, reference, teacher.server.base_url, "free")
        kill_after_first_line(victim, [killed / name for name in files], tmp_path / "killed.log")
        teacher.held = False
        teacher.release.set()
        written_before = qids([killed / name for name in files])
        assert 1 <= len(written_before) < N  # killed midway: some written, some not

        asked_before = len(teacher.server.received)
        finish(command(entry, killed, teacher.server.base_url, "held"), tmp_path / "resumed.log")
        resumed_asked = {teacher.index(r.json["prompt"])[0] for r in teacher.server.received[asked_before:]}

    assert not resumed_asked & {questions.index(next(q for q in questions if q.qid == qid)) for qid in written_before}
    final = qids([killed / name for name in files])
    assert sorted(final) == sorted(q.qid for q in questions) and len(final) == len(set(final)) == N
    assert sorted(qids([reference / name for name in files])) == sorted(final)
    ours, theirs = (json.loads((folder / "summary.json").read_text()) for folder in (killed, reference))
    assert timeless(ours) == pytest.approx(timeless(theirs), rel=1e-9)
    if entry == "evaluate":  # an evaluation records its manifest; generate's samples are no result to compare
        assert ours["manifest"] == theirs["manifest"] and ours["manifest"]["questions"] == N
    else:
        assert "manifest" not in ours and "manifest" not in theirs
    if entry == "generate":
        assert ours["kept"] == 5 and ours["attempted"] == N  # all but question 3 answer right
    else:
        assert ours["em"] == pytest.approx(5 / 6) and ours["tool_calls_mean"] == pytest.approx(3 / 6)


@pytest.mark.slow
def test_sigkill_of_an_embedded_model_evaluation_then_rerun_matches_an_uninterrupted_run(tmp_path):
    """A few minutes on 2 cores (7 min on a busy machine): three runs that each load the embedded model
    and prompt it few-shot (greedy decoding, deterministic)."""
    small = [sys.executable, "-m", "fireact.evaluate", "task.n=2", "in_flight=1", "method.max_rounds=2",
             "method.max_tokens=32", "method.max_retries=0", "~tracker"]
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    victim = start([*small, f"hydra.run.dir={killed}"], tmp_path / "killed.log")
    kill_after_first_line(victim, [killed / "trajectories.jsonl"], tmp_path / "killed.log")
    assert len(qids([killed / "trajectories.jsonl"])) == 1
    finish([*small, f"hydra.run.dir={killed}"], tmp_path / "resumed.log")
    assert "already written" in (tmp_path / "resumed.log").read_text()
    finish([*small, f"hydra.run.dir={reference}"], tmp_path / "reference.log")

    final = qids([killed / "trajectories.jsonl"])
    assert final == [q.qid for q in HotpotQA(shuffle_seed=233, n=2).questions()]
    ours, theirs = (json.loads((folder / "summary.json").read_text()) for folder in (killed, reference))
    assert timeless(ours) == pytest.approx(timeless(theirs), rel=1e-9) and ours["manifest"] == theirs["manifest"]
    strip = lambda t: {k: v for k, v in t.to_dict().items() if k not in ("wall_time", "started_at")}  # noqa: E731
    assert [strip(t) for t in read_jsonl(killed / "trajectories.jsonl")[0]] == [strip(t) for t in read_jsonl(reference / "trajectories.jsonl")[0]]


def test_ctrl_c_midway_says_in_a_line_how_to_resume_and_that_command_finishes(tmp_path):
    questions = HotpotQA(split="dev", shuffle_seed=233, n=N).questions()
    teacher = Teacher(questions)
    run_dir, log = tmp_path / "run", tmp_path / "interrupted.log"
    cmd = command("evaluate", run_dir, teacher.server.base_url, "held")
    with teacher.server:
        teacher.held = True
        # A user's terminal delivers Ctrl-C; a test run started in the background (nohup, CI) may
        # ignore SIGINT, which a child would inherit: the child starts with the default.
        process = subprocess.Popen(cmd, cwd=REPO_ROOT, env=environment(), stdout=subprocess.DEVNULL,
                                   stderr=log.open("w"), preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + KILL_WAIT_S
        while lines(run_dir / "trajectories.jsonl") < 1:
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        time.sleep(1.0)  # the signal is taken while the other questions' requests are still held...
        teacher.release.set()  # ...then those requests come back, so the process can end
        assert process.wait(timeout=120) == 130, log.read_text()[-3000:]
        said = log.read_text()
        assert "Traceback" not in said
        interrupted = said[said.index("interrupted:"):].splitlines()
        assert interrupted[0] == "interrupted: what was written is kept; the same command resumes:"
        said = shlex.split(interrupted[1])  # this interpreter (relative to the folder it ran in), the module, the overrides
        assert said[1:] == cmd[1:] and (REPO_ROOT / said[0]).resolve() == Path(cmd[0]).resolve() and len(interrupted) == 2
        teacher.held = False
        finish(cmd, tmp_path / "resumed.log")
    final = qids([run_dir / "trajectories.jsonl"])
    assert sorted(final) == sorted(q.qid for q in questions) and len(set(final)) == N
