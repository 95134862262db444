"""One rollout loop for every method, batched across questions.

A question may be run several times (samples 0, 1, ...); every request carries a seed made
from (run seed, question, sample, round, attempt), so a sampling backend draws the same
trajectory for a (question, sample) whatever else is in the batch, and a resumed run
continues exactly. Each round sends every unfinished question's prompt to the backend in one batch, parses the
replies, re-asks those with no action (up to `method.max_retries` times, then the round
counts as `finish[]` and a format error), runs the tool calls concurrently, and appends the
observations. A finished question becomes a `Trajectory` at once and is handed to
`on_finish` (the caller appends it to the output JSONL), so a killed run loses nothing done.
With a `tracer` (fireact.tracking.traces), each episode also keeps its model and tool calls
(prompt, reply, tokens, times) and hands them to the tracer with the finished trajectory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from fireact.agents.methods import Method
from fireact.llm.base import LLM, Completion, Prompt, request_seed
from fireact.tasks.base import Question, Task
from fireact.tools.base import Tool, ToolError
from fireact.trajectory import Step, Trajectory, final_answer

log = logging.getLogger(__name__)


@dataclass
class ModelCall:
    """One request to the model, as the trace shows it."""

    round: int
    attempt: int  # 0: the round's first ask; 1, 2, ...: re-asks of a reply that held no action
    prompt: Prompt
    text: str
    prompt_tokens: int
    completion_tokens: int
    start_ns: int  # wall-clock (time.time_ns) bounds of the batched request that carried it
    end_ns: int
    error: str | None = None


@dataclass
class ToolCall:
    """One call of the tool, as the trace shows it."""

    round: int
    action: str
    argument: str
    observation: str  # what the agent saw
    start_ns: int
    end_ns: int
    tool_observation: str | None = None  # what the tool returned, when the noise replaced it
    error: bool = False


@dataclass
class Episode:
    question: Question
    sample: int
    tool: Tool  # this question's view of the tool (Wikipedia's Lookup reads its last page)
    steps: list[Step] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    format_errors: int = 0
    error: str | None = None
    finished: bool = False
    calls: list[ModelCall | ToolCall] | None = None  # kept only for a tracer

    @property
    def name(self) -> str:
        """The episode's name for the noise: the qid, with the sample number after the first sample."""
        return self.question.qid if self.sample == 0 else f"{self.question.qid}#{self.sample}"

    def add_usage(self, completion: Completion) -> None:
        self.prompt_tokens += completion.prompt_tokens
        self.completion_tokens += completion.completion_tokens


class Rollout:
    """Runs `method` on `task`'s questions with `llm`, `tool` and an optional `noise`.

    `cost(prompt_tokens, completion_tokens, wall_seconds)` prices one trajectory.
    """

    def __init__(
        self,
        llm: LLM,
        method: Method,
        task: Task,
        tool: Tool,
        noise=None,
        cost: Callable[[int, int, float], float] | None = None,
        tool_workers: int = 8,
        seed: int | None = None,
        labels: dict | None = None,
        tracer=None,
    ):
        self.llm, self.method, self.task, self.tool, self.noise = llm, method, task, tool, noise
        self.cost = cost or (lambda *_: 0.0)
        self.tool_workers, self.seed = tool_workers, seed
        self.labels = labels or {}  # recorded on every trajectory: backend, model, tool, noise names
        self.tracer = tracer  # .add(trajectory, calls) for each finished episode
        self.prompt = method.prompter(task)

    def run(self, questions: Sequence[Question], on_finish: Callable[[Trajectory], None] = lambda t: None,
            samples: Sequence[int] | None = None) -> list[Trajectory]:
        """One trajectory per question, in order; `samples[i]` is question i's sample number (default 0)."""
        samples = list(samples) if samples is not None else [0] * len(questions)
        episodes = [Episode(q, sample, self.tool.new_episode(), calls=[] if self.tracer else None)
                    for q, sample in zip(questions, samples, strict=True)]
        # Every question of the batch sends its first request now (the rounds are synchronous).
        started_at, started = time.time(), time.perf_counter()
        results: dict[tuple[str, int], Trajectory] = {}

        def finish(episode: Episode) -> None:
            episode.finished = True
            if self.noise is not None:
                self.noise.end_episode(episode.name)
            trajectory = self._trajectory(episode, started_at, time.perf_counter() - started)
            results[trajectory.key] = trajectory
            on_finish(trajectory)
            if self.tracer is not None:  # after the write: a kill in between loses a trace, never duplicates one
                self.tracer.add(trajectory, episode.calls)

        with ThreadPoolExecutor(self.tool_workers) as pool:
            for round_number in range(1, self.method.max_rounds + 1):
                active = [e for e in episodes if not e.finished]
                if not active:
                    break
                steps = self._ask(active, round_number)
                observations = self._observe(pool, active, steps, round_number)
                for episode, step, observation in zip(active, steps, observations):
                    if step is None:  # the backend failed after its retries
                        finish(episode)
                        continue
                    step.observation = observation
                    episode.steps.append(step)
                    if step.is_finish:
                        finish(episode)
            for episode in episodes:
                if not episode.finished:
                    episode.error = episode.error or f"no finish[] within {self.method.max_rounds} rounds"
                    finish(episode)
        return [results[e.question.qid, e.sample] for e in episodes]

    # --- one round -------------------------------------------------------------------
    def _ask(self, episodes: list[Episode], round_number: int) -> list[Step | None]:
        """Each episode's step for this round; replies with no action are re-asked."""
        prompts = [self.prompt(e.question.question, e.steps, round_number) for e in episodes]
        replies = [""] * len(episodes)
        steps: list[Step | None] = [None] * len(episodes)
        pending = list(range(len(episodes)))
        for attempt in range(self.method.max_retries + 1):
            batch = [prompts[i] if attempt == 0 else self.method.reask(prompts[i], replies[i]) for i in pending]
            seeds = [request_seed(self.seed, episodes[i].question.qid, episodes[i].sample, round_number, attempt) for i in pending]
            start_ns = time.time_ns()
            completions = self.llm.generate(batch, stop=self.method.stop, max_tokens=self.method.max_tokens, seeds=seeds)
            end_ns = time.time_ns()
            still_pending = []
            for i, prompt, completion in zip(pending, batch, completions):
                episodes[i].add_usage(completion)
                if episodes[i].calls is not None:
                    episodes[i].calls.append(ModelCall(
                        round_number, attempt, prompt, completion.text, completion.prompt_tokens,
                        completion.completion_tokens, start_ns, end_ns, completion.error))
                if completion.error is not None:
                    episodes[i].error = f"LLM request failed: {completion.error}"
                    continue
                replies[i] = completion.text if attempt == 0 else self.method.joined(replies[i], completion.text)
                steps[i] = self.method.parse(replies[i], round_number)
                if steps[i] is None:
                    still_pending.append(i)
            pending = still_pending
            if not pending:
                break
        for i in pending:  # no action after every re-ask: counted as finish[] (the paper's rule)
            episodes[i].format_errors += 1
            steps[i] = Step(replies[i].strip().split("\n", 1)[0], "finish", "")
        return steps

    def _observe(self, pool, episodes, steps, round_number) -> list[str | None]:
        def observe(episode: Episode, step: Step | None) -> str | None:
            if step is None:
                return None
            if step.is_finish:
                reward = self.task.score(step.argument, episode.question.gold)["em"] == 1.0
                return f"Episode finished, reward = {reward}"
            if step.argument is None or step.action.lower() not in self.tool.actions:
                calls = " and ".join(f"{a}[<argument>]" for a in (*self.tool.actions, "finish"))
                return f"Invalid action: {step.action_text}. Valid actions are {calls}."
            start_ns, failed = time.time_ns(), False
            try:
                observation = seen = episode.tool.run(step.action.lower(), step.argument)
            except ToolError as err:
                observation = seen = f"Tool error: {err}"
                failed = True
            else:
                if self.noise is not None:
                    seen = self.noise.apply(observation, f"{episode.name}/{round_number}")
            if episode.calls is not None:
                episode.calls.append(ToolCall(round_number, step.action.lower(), step.argument, seen, start_ns,
                                              time.time_ns(), observation if seen != observation else None, failed))
            return seen

        return list(pool.map(observe, episodes, steps))

    # --- the record ------------------------------------------------------------------
    def _trajectory(self, episode: Episode, started_at: float, wall_time: float) -> Trajectory:
        q = episode.question
        answer = final_answer(episode.steps)
        scores = self.task.score(answer, q.gold) if answer is not None else {"em": 0.0, "f1": 0.0}
        return Trajectory(
            task=self.task.name, qid=q.qid, question=q.question, gold=q.gold, method=self.method.name,
            steps=episode.steps, answer=answer, em=scores["em"], f1=scores["f1"],
            prompt_tokens=episode.prompt_tokens, completion_tokens=episode.completion_tokens,
            cost=self.cost(episode.prompt_tokens, episode.completion_tokens, wall_time),
            wall_time=wall_time, started_at=started_at, seed=self.seed, sample=episode.sample, format_errors=episode.format_errors, error=episode.error,
            **self.labels,
        )
