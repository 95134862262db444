"""One rollout loop for every method: each question its own stream, batched across questions.

A question runs ask -> parse -> tool -> ask as soon as its own previous step is done; there is
no round barrier, so a slow tool call, a retried API request or a long generation holds only its
own question. A local engine gets its asks as a stream (`LLM.submit`, then `LLM.step` on this
thread, the tools running in a pool meanwhile): a continuously batching backend (hf, vllm) lets
an ask join the batch already decoding at its next step, and when the engine is idle a ready ask
waits up to `gather_s` for tool calls still running so that their next asks start with it. An
API backend gets one call per ask instead, several at once (`LLM.parallel_calls`). A reply
with no action is re-asked (up to `method.max_retries` times, then the round counts as
`finish[]` and a format error); an action the tool cannot run (an unknown name, an unclosed
bracket) gets an "Invalid action" observation and counts as a format error too.

A question may be run several times (samples 0, 1, ...); every request carries a seed made
from (run seed, question, sample, round, attempt), so a sampling backend draws the same
trajectory for a (question, sample) whatever else is in the batch, and a resumed run
continues exactly; greedy, a question's trajectory does not depend on what shares its batches.
On a local engine (`LLM.samples_tokens`: hf, vllm) the rollout is token in, token out: an
episode keeps the ids it fed and sampled (`TokenTrace`), each next prompt is those ids with the
harness's new ids after them (the observation and the cues, as the method's prompt renders
them), and the sampled ids are never decoded and tokenized again; the trajectory carries them, so
a trainer scores what the policy wrote, not a re-rendering of it. A re-ask continues the reply in
the same turn (chat too), and a reply forced to finish[] keeps the ids the policy did write.
A finished question becomes a `Trajectory` at once and is handed to `on_finish` (the caller
appends it to the output JSONL), so a killed run loses nothing done. A question whose backend
could not answer (an outage: `Completion.outage`) is no result: it is not handed on, the others
go on, and the run ends with `Incomplete`, naming the error, so that a rerun runs it. With a
`tracer` (fireact.tracking.traces), each episode also keeps its model and tool calls (prompt,
reply, tokens, times) and hands them to the tracer with the finished trajectory.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from fireact import threads
from fireact.agents.methods import Method
from fireact.calls import ModelCall, ToolCall
from fireact.errors import Incomplete
from fireact.llm.base import LLM, Completion, Prompt, TokenIds, request_seed
from fireact.tasks.base import Question, Task
from fireact.tools.base import Tool, ToolError
from fireact.trajectory import Step, TokenTrace, Trajectory, final_answer

log = logging.getLogger(__name__)

# Stands for the reply in a prompt rendered to find the text the harness adds after it.
REPLY_MARK = "\x00reply\x00"


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
    outage: bool = False  # the backend could not answer: no result (Completion.outage)
    finished: bool = False
    calls: list[ModelCall | ToolCall] | None = None  # kept only for a tracer
    started_at: float = 0.0  # time.time() at its first ask
    started: float = 0.0  # time.perf_counter() then: its wall_time counts from here
    trace: TokenTrace | None = None  # token in, token out (a local engine)
    pending: Completion | None = None  # a reply whose ids wait for the observation that follows them

    @property
    def name(self) -> str:
        """The episode's name for the noise: the qid, with the sample number after the first sample."""
        return self.question.qid if self.sample == 0 else f"{self.question.qid}#{self.sample}"

    def add_usage(self, completion: Completion) -> None:
        self.prompt_tokens += completion.prompt_tokens
        self.completion_tokens += completion.completion_tokens


@dataclass
class Request:
    """One ask of the model for an episode's round: attempt 0 is the round's prompt, 1, 2, ... re-ask
    `reply` (the text so far, which held no action)."""

    episode: Episode
    round: int
    attempt: int = 0
    reply: str = ""


class Rollout:
    """Runs `method` on `task`'s questions with `llm`, `tool` and an optional `noise`.

    `cost(prompt_tokens, completion_tokens, wall_seconds)` prices one trajectory. `gather_s`: how
    long a ready ask waits for tool calls still running while the engine is idle, so that their
    next asks start with it; None is the round barrier: an ask waits for every running tool call
    and request (every question's round r before any round r+1), and none joins a running batch.
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
        gather_s: float | None = 0.05,
    ):
        self.llm, self.method, self.task, self.tool, self.noise = llm, method, task, tool, noise
        self.cost = cost or (lambda *_: 0.0)
        self.tool_workers, self.seed = tool_workers, seed
        self.labels = labels or {}  # recorded on every trajectory: backend, model, tool, noise names
        self.tracer = tracer  # .add(trajectory, calls) for each finished episode
        self.gather_s = gather_s
        self.prompt = method.prompter(task)
        self.tokens = llm.samples_tokens

    def run(self, questions: Sequence[Question], on_finish: Callable[[Trajectory], None] = lambda t: None,
            samples: Sequence[int] | None = None, in_flight: int | None = None) -> list[Trajectory]:
        """One trajectory per question, in order; `samples[i]` is question i's sample number (default 0).

        Each question is its own stream, ask -> parse -> tool -> ask: no round barrier. Asks go to
        the backend as they become ready, through a driver: a local engine (llm.parallel_calls == 1)
        is submitted every ready ask and stepped on this thread (`EngineDriver`); an API backend gets
        each ask as its own call, up to llm.parallel_calls at once (`APIDriver`). Tools run in a pool
        meanwhile. At most `in_flight` questions run at once (all by default); one that finishes
        lets the next one start."""
        samples = list(samples) if samples is not None else [0] * len(questions)
        episodes = [Episode(q, sample, self.tool.new_episode(), calls=[] if self.tracer else None,
                            trace=TokenTrace(self.method.format) if self.tokens else None)
                    for q, sample in zip(questions, samples, strict=True)]
        driver = EngineDriver(self) if self.llm.parallel_calls == 1 else APIDriver(self)
        with ThreadPoolExecutor(self.tool_workers) as tool_pool, driver:
            schedule = Schedule(self, episodes, tool_pool, on_finish, in_flight)
            while schedule.busy or driver.busy:
                threads.refresh()  # cores given back or taken as our other processes start and end
                gather = schedule.gather_left()
                if schedule.ready and driver.takes_asks(schedule, gather):
                    driver.ask(schedule)
                driver.advance(schedule, gather)
        if schedule.outages:
            first = schedule.outages[0]
            raise Incomplete(f"{len(schedule.outages)} of {len(episodes)} questions were not run: {first.error}. "
                             f"The {len(episodes) - len(schedule.outages)} finished are written; once the backend "
                             f"answers, the same command runs the rest")
        return [schedule.results[e.question.qid, e.sample] for e in episodes]

    # --- one answer and one tool call --------------------------------------------------
    def _seed(self, request: Request) -> int:
        """The request's seed: from (run seed, question, sample, round, attempt)."""
        episode = request.episode
        return request_seed(self.seed, episode.question.qid, episode.sample, request.round, request.attempt)

    def _prompt(self, request: Request) -> Prompt:
        episode = request.episode
        if episode.trace is None:
            prompt = self.prompt(episode.question.question, episode.steps, request.round)
            return prompt if request.attempt == 0 else self.method.reask(prompt, request.reply)
        if not episode.trace.ids:  # the first ask: the method's prompt, tokenized once
            episode.trace.add(self.llm.encode(self.prompt(episode.question.question, episode.steps, request.round)))
        return TokenIds(episode.trace.ids)

    def _reply_text(self, completion: Completion) -> str:
        """The reply as the method reads it: through the stop string that ended it when the stop
        string is the agent's (Method.keeps_stop), else cut before it."""
        return completion.text + (completion.stop or "") if self.method.keeps_stop else completion.text

    def _harness_text(self, episode: Episode) -> str:
        """What the harness adds after the reply that made the episode's last step: the text that
        follows that reply in the method's next prompt (the observation, the next cue): the method's
        own (Method.harness_text), else found by rendering the prompt with a mark in the reply's place."""
        *before, last = episode.steps
        known = self.method.harness_text(last)
        if known is not None:
            return known
        marked = [*before, Step("", REPLY_MARK, None, last.observation)]
        prompt = self.prompt(episode.question.question, marked, len(episode.steps) + 1)
        text = prompt if isinstance(prompt, str) else self.llm.decode(self.llm.encode(prompt))
        return text[text.index(REPLY_MARK) + len(REPLY_MARK):]

    def _add_reply(self, trace: TokenTrace, reply: Completion, follows: str | None) -> None:
        """The reply's sampled ids into the trace, then the harness's ids up to the next ask.
        follows: the text from the reply's start to the next ask (the reply as the parser read it,
        then what the harness adds); the sampled ids kept are the most that spell a prefix of it
        (a stop string the policy wrote stays; a token past it goes), and the rest of it is
        tokenized as the harness's. None: the episode ends here, every sampled id kept."""
        ids, logprobs = reply.token_ids, reply.logprobs
        if follows is None:
            trace.add(ids, logprobs)
            return
        keep, text = len(ids), self.llm.decode(ids)
        while keep and not follows.startswith(text):
            keep -= 1
            text = self.llm.decode(ids[:keep])
        trace.add(ids[:keep], logprobs[:keep])
        trace.add(self.llm.encode(follows[len(text):], special_tokens=False))

    def _take(self, request: Request, prompt: Prompt, completion: Completion, start_ns: int,
              end_ns: int) -> Step | Request | None:
        """The step in a reply; a re-ask when it holds no action (until max_retries, then it counts as
        finish[]: the paper's rule); None when the backend failed."""
        episode = request.episode
        episode.add_usage(completion)
        if episode.calls is not None:
            shown = self.llm.decode(prompt) if isinstance(prompt, TokenIds) else prompt
            episode.calls.append(ModelCall(request.round, request.attempt, shown, completion.text,
                                           completion.prompt_tokens, completion.completion_tokens,
                                           start_ns, end_ns, completion.error))
        if completion.error is not None:
            episode.error = f"LLM request failed: {completion.error}"
            episode.outage = completion.outage
            return None
        text = self._reply_text(completion)
        reply = text if request.attempt == 0 else self.method.joined(request.reply, text)
        step = self.method.parse(reply, request.round)
        if step is None and request.attempt < self.method.max_retries:
            if episode.trace is not None:  # the reply continues after the cue
                self._add_reply(episode.trace, completion, completion.text.rstrip() + self.method.retry_cue)
            return Request(episode, request.round, request.attempt + 1, reply)
        if step is None:
            episode.format_errors += 1
            step = Step(reply.strip().split("\n", 1)[0], "finish", "")  # never sampled: the trace keeps what was
        episode.pending = completion
        return step

    def _observe(self, episode: Episode, step: Step, round_number: int) -> str:
        if step.is_finish:
            reward = self.task.score(step.argument, episode.question.gold)["em"] == 1.0
            return f"Episode finished, reward = {reward}"
        if step.argument is None or step.action.lower() not in self.tool.actions:
            episode.format_errors += 1  # an action the harness cannot run is malformed too
            return self.method.invalid_action(step, self.tool.actions)
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
            tokens=episode.trace, **self.labels,
        )


class Schedule:
    """The state of one `Rollout.run`: the episodes waiting to start and running, the asks ready to
    go, the tool calls in flight, the finished trajectories. What happens to an episode between
    the model and the tool is decided here; when asks go to the backend is its driver's."""

    def __init__(self, rollout: Rollout, episodes: list[Episode], tool_pool: ThreadPoolExecutor,
                 on_finish: Callable[[Trajectory], None], in_flight: int | None):
        self.rollout, self.tool_pool, self.on_finish = rollout, tool_pool, on_finish
        self.order = {id(e): i for i, e in enumerate(episodes)}  # batches and writes go in question order
        self.waiting = episodes[::-1]  # popped from the end: in question order
        self.limit = in_flight or len(episodes) or 1
        self.running = 0
        self.ready: list[Request] = []
        self.ready_since = 0.0  # when the oldest ready ask became ready
        self.tools: dict[Future, tuple[Episode, Step]] = {}
        self.results: dict[tuple[str, int], Trajectory] = {}
        self.outages: list[Episode] = []  # ended by an outage: no result
        self.admit()

    @property
    def busy(self) -> bool:
        return bool(self.ready or self.tools)

    def position(self, episode: Episode) -> int:
        return self.order[id(episode)]

    def gather_left(self) -> float | None:
        """How much longer the oldest ready ask may wait for running tool calls (rollout.gather_s);
        None at the round barrier."""
        gather_s = self.rollout.gather_s
        return None if gather_s is None else gather_s - (time.perf_counter() - self.ready_since)

    def take_ready(self) -> Request:
        """The ready ask of the first question in order."""
        self.ready.sort(key=lambda r: self.position(r.episode))
        return self.ready.pop(0)

    def admit(self) -> None:
        while self.waiting and self.running < self.limit:
            episode = self.waiting.pop()
            self.running += 1
            episode.started_at, episode.started = time.time(), time.perf_counter()
            self.queue(Request(episode, 1))

    def queue(self, request: Request) -> None:
        if not self.ready:
            self.ready_since = time.perf_counter()
        self.ready.append(request)

    def answered(self, request: Request, prompt: Prompt, completion: Completion, start_ns: int, end_ns: int) -> None:
        """A reply: its step goes to the tool, a re-ask back to the ready asks; a failed backend
        ends the episode."""
        step = self.rollout._take(request, prompt, completion, start_ns, end_ns)
        if isinstance(step, Request):
            self.queue(step)
        elif step is None:  # the backend failed after its retries
            self.finish(request.episode)
        else:
            future = self.tool_pool.submit(self.rollout._observe, request.episode, step, request.round)
            self.tools[future] = (request.episode, step)

    def observed(self, future: Future) -> None:
        """A tool call done: the step is the episode's, which then asks its next round or ends."""
        episode, step = self.tools.pop(future)
        step.observation = future.result()
        episode.steps.append(step)
        max_rounds = self.rollout.method.max_rounds
        ends = step.is_finish or len(episode.steps) >= max_rounds
        if episode.trace is not None:
            reply, episode.pending = episode.pending, None
            follows = None if ends else self.rollout._reply_text(reply) + self.rollout._harness_text(episode)
            self.rollout._add_reply(episode.trace, reply, follows)
        if ends:
            if not step.is_finish:
                episode.error = episode.error or f"no finish[] within {max_rounds} rounds"
            self.finish(episode)
        else:
            self.queue(Request(episode, len(episode.steps) + 1))

    def finish(self, episode: Episode) -> None:
        episode.finished = True
        self.running -= 1
        rollout = self.rollout
        if rollout.noise is not None:
            rollout.noise.end_episode(episode.name)
        if episode.outage:
            self.outages.append(episode)
            self.admit()
            return
        trajectory = rollout._trajectory(episode, episode.started_at, time.perf_counter() - episode.started)
        self.results[trajectory.key] = trajectory
        self.on_finish(trajectory)
        if rollout.tracer is not None:  # after the write: a kill in between loses a trace, never duplicates one
            rollout.tracer.add(trajectory, episode.calls)
        self.admit()


class EngineDriver:
    """A local engine (hf, vllm): every ready ask is submitted and the engine stepped on this
    thread; a step decodes a token for its whole batch, and tools that finished meanwhile queue
    their next asks to join it. A ready ask joins a running batch at once; to an idle engine it
    goes when no tool call is running whose next ask may start with it (gather_s), and at the
    round barrier (gather_s None) only when every tool call is done."""

    def __init__(self, rollout: Rollout):
        self.rollout, self.llm = rollout, rollout.llm
        self.submitted: dict[int, tuple[Request, Prompt, int]] = {}  # by key: (request, prompt, start_ns)
        self.keys = itertools.count()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    @property
    def busy(self) -> bool:
        return bool(self.submitted)

    def takes_asks(self, schedule: Schedule, gather: float | None) -> bool:
        if self.submitted:
            return gather is not None
        return not schedule.tools or (gather is not None and gather <= 0)

    def ask(self, schedule: Schedule) -> None:
        method = self.rollout.method
        while schedule.ready:
            request = schedule.take_ready()
            prompt = self.rollout._prompt(request)
            key = next(self.keys)
            self.submitted[key] = (request, prompt, time.time_ns())
            self.llm.submit(key, prompt, stop=method.stop, max_tokens=method.max_tokens, seed=self.rollout._seed(request))

    def advance(self, schedule: Schedule, gather: float | None) -> None:
        """One step of the engine, then whatever tools finished meanwhile; with nothing decoding,
        a wait for a tool call (at most `gather` while an ask is ready)."""
        if self.submitted:
            finished = self.llm.step()
            end_ns = time.time_ns()
            for key, completion in sorted(finished, key=lambda f: schedule.position(self.submitted[f[0]][0].episode)):
                request, prompt, start_ns = self.submitted.pop(key)
                schedule.answered(request, prompt, completion, start_ns, end_ns)
            done = [future for future in schedule.tools if future.done()]
        else:
            timeout = gather if schedule.ready and schedule.tools else None
            done, _ = wait(list(schedule.tools), timeout=timeout, return_when=FIRST_COMPLETED)
        for future in sorted(done, key=lambda f: schedule.position(schedule.tools[f][0])):
            schedule.observed(future)


class APIDriver:
    """An API backend: each ask its own call in a pool, up to llm.parallel_calls at once, so a
    request being retried holds no other question. An ask goes when a call is free and no tool
    call is running whose next ask may start with it (gather_s)."""

    def __init__(self, rollout: Rollout):
        self.rollout, self.llm = rollout, rollout.llm
        self.parallel = rollout.llm.parallel_calls
        self.asks: dict[Future, tuple[Request, Prompt, int]] = {}  # future: (request, prompt, start_ns)
        self.pool = ThreadPoolExecutor(self.parallel)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(wait=True)

    @property
    def busy(self) -> bool:
        return bool(self.asks)

    def takes_asks(self, schedule: Schedule, gather: float | None) -> bool:
        return len(self.asks) < self.parallel and (not schedule.tools or (gather is not None and gather <= 0))

    def ask(self, schedule: Schedule) -> None:
        method = self.rollout.method
        while schedule.ready and len(self.asks) < self.parallel:
            request = schedule.take_ready()
            prompt = self.rollout._prompt(request)
            future = self.pool.submit(self.llm.generate, [prompt], stop=method.stop, max_tokens=method.max_tokens,
                                      seeds=[self.rollout._seed(request)])
            self.asks[future] = (request, prompt, time.time_ns())

    def advance(self, schedule: Schedule, gather: float | None) -> None:
        """A wait for the first call or tool call to finish (at most `gather` while an ask is ready
        and a call is free), then each that did, in question order."""
        timeout = gather if schedule.ready and schedule.tools and len(self.asks) < self.parallel else None
        done, _ = wait([*self.asks, *schedule.tools], timeout=timeout, return_when=FIRST_COMPLETED)

        def episode(future: Future) -> Episode:
            return self.asks[future][0].episode if future in self.asks else schedule.tools[future][0]

        for future in sorted(done, key=lambda f: schedule.position(episode(f))):
            if future in self.asks:
                request, prompt, start_ns = self.asks.pop(future)
                schedule.answered(request, prompt, future.result()[0], start_ns, time.time_ns())
            else:
                schedule.observed(future)
