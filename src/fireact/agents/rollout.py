"""One rollout loop for every method: each question its own stream, batched across questions.

A question runs ask -> parse -> tool -> ask as soon as its own previous step is done; there is
no round barrier, so a slow tool call, a retried API request or a long generation holds only its
own question. A local engine gets its asks as a stream (`LLM.submit`, then `LLM.step` on this
thread, the tools running in a pool meanwhile): a continuously batching backend (hf, vllm) lets
an ask join the batch already decoding at its next step, and when the engine is idle a ready ask
waits up to `gather_s` for tool calls still running so that their next asks start with it. An
API backend gets one call per ask instead, several at once (`LLM.parallel_calls`). A reply
with no action is re-asked (up to `method.max_retries` times, then the round counts as
`finish[]` and a format error).

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
appends it to the output JSONL), so a killed run loses nothing done. With a `tracer`
(fireact.tracking.traces), each episode also keeps its model and tool calls (prompt, reply,
tokens, times) and hands them to the tracer with the finished trajectory.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from fireact.agents.methods import Method
from fireact.calls import ModelCall, ToolCall
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
        the backend as they become ready: a local engine (llm.parallel_calls == 1) is submitted
        every ready ask and stepped on this thread (a step decodes a token for its whole batch,
        and tools that finished meanwhile queue their next asks to join it); an API backend gets
        each ask as its own call, up to llm.parallel_calls at once, so a request being retried
        holds no other question. Tools run in a pool meanwhile. At most `in_flight` questions run at once (all
        by default); one that finishes lets the next one start."""
        samples = list(samples) if samples is not None else [0] * len(questions)
        episodes = [Episode(q, sample, self.tool.new_episode(), calls=[] if self.tracer else None,
                            trace=TokenTrace(self.method.format) if self.tokens else None)
                    for q, sample in zip(questions, samples, strict=True)]
        order = {id(e): i for i, e in enumerate(episodes)}  # batches and writes go in question order
        waiting = episodes[::-1]  # popped from the end: in question order
        limit = in_flight or len(episodes) or 1
        parallel = self.llm.parallel_calls
        results: dict[tuple[str, int], Trajectory] = {}
        ready: list[Request] = []
        asks: dict[Future, tuple[list[Request], list[Prompt], int]] = {}  # future: (requests, prompts, start_ns)
        submitted: dict[int, tuple[Request, Prompt, int]] = {}  # a local engine's requests by key: (request, prompt, start_ns)
        keys = itertools.count()
        tools: dict[Future, tuple[Episode, Step]] = {}
        ready_since = 0.0  # when the oldest ready ask became ready
        running = 0

        def admit() -> None:
            nonlocal running
            while waiting and running < limit:
                episode = waiting.pop()
                running += 1
                episode.started_at, episode.started = time.time(), time.perf_counter()
                queue(Request(episode, 1))

        def queue(request: Request) -> None:
            nonlocal ready_since
            if not ready:
                ready_since = time.perf_counter()
            ready.append(request)

        def finish(episode: Episode) -> None:
            nonlocal running
            episode.finished = True
            running -= 1
            if self.noise is not None:
                self.noise.end_episode(episode.name)
            trajectory = self._trajectory(episode, episode.started_at, time.perf_counter() - episode.started)
            results[trajectory.key] = trajectory
            on_finish(trajectory)
            if self.tracer is not None:  # after the write: a kill in between loses a trace, never duplicates one
                self.tracer.add(trajectory, episode.calls)
            admit()

        def answered(requests: list[Request], prompts: list[Prompt], completions, start_ns: int, end_ns: int) -> None:
            for request, prompt, completion in zip(requests, prompts, completions, strict=True):
                step = self._take(request, prompt, completion, start_ns, end_ns)
                if isinstance(step, Request):
                    queue(step)
                elif step is None:  # the backend failed after its retries
                    finish(request.episode)
                else:
                    future = tool_pool.submit(self._observe, request.episode, step, request.round)
                    tools[future] = (request.episode, step)

        def observed(episode: Episode, step: Step, observation: str) -> None:
            step.observation = observation
            episode.steps.append(step)
            ends = step.is_finish or len(episode.steps) >= self.method.max_rounds
            if episode.trace is not None:
                reply, episode.pending = episode.pending, None
                self._add_reply(episode.trace, reply, None if ends else reply.text + self._harness_text(episode))
            if step.is_finish:
                finish(episode)
            elif ends:
                episode.error = episode.error or f"no finish[] within {self.method.max_rounds} rounds"
                finish(episode)
            else:
                queue(Request(episode, len(episode.steps) + 1))

        def stepped(finished: list) -> None:
            end_ns = time.time_ns()
            for key, completion in sorted(finished, key=lambda f: order[id(submitted[f[0]][0].episode)]):
                request, prompt, start_ns = submitted.pop(key)
                answered([request], [prompt], [completion], start_ns, end_ns)

        def episode_of(future: Future) -> Episode:
            return asks[future][0][0].episode if future in asks else tools[future][0]

        def ask() -> None:
            ready.sort(key=lambda r: order[id(r.episode)])
            while ready and len(asks) < parallel:
                request = ready.pop(0)
                prompt = self._prompt(request)
                seed = request_seed(self.seed, request.episode.question.qid, request.episode.sample, request.round,
                                    request.attempt)
                if parallel == 1:  # a local engine: submitted now, stepped on this thread
                    key = next(keys)
                    submitted[key] = (request, prompt, time.time_ns())
                    self.llm.submit(key, prompt, stop=self.method.stop, max_tokens=self.method.max_tokens, seed=seed)
                    continue
                future = ask_pool.submit(self.llm.generate, [prompt], stop=self.method.stop,
                                         max_tokens=self.method.max_tokens, seeds=[seed])
                asks[future] = ([request], [prompt], time.time_ns())

        admit()
        with ThreadPoolExecutor(self.tool_workers) as tool_pool, ThreadPoolExecutor(parallel) as ask_pool:
            while ready or asks or tools or submitted:
                # A ready ask joins a running batch at once; to an idle engine it goes now unless tools
                # are still running whose next asks may start with it. At the barrier it waits for all.
                gather = None if self.gather_s is None else self.gather_s - (time.perf_counter() - ready_since)
                joins = bool(submitted) and self.gather_s is not None
                idle = not submitted and (not tools or (gather is not None and gather <= 0))
                if ready and len(asks) < parallel and (joins or idle):
                    ask()
                if submitted:  # one step of the local engine, then whatever tools finished meanwhile
                    stepped(self.llm.step())
                    done = {future for future in tools if future.done()}
                else:
                    timeout = gather if ready and tools and len(asks) < parallel and gather is not None else None
                    done, _ = wait([*asks, *tools], timeout=timeout, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: order[id(episode_of(f))]):
                    if future in asks:
                        requests, prompts, start_ns = asks.pop(future)
                        answered(requests, prompts, future.result(), start_ns, time.time_ns())
                    else:
                        episode, step = tools.pop(future)
                        observed(episode, step, future.result())
        return [results[e.question.qid, e.sample] for e in episodes]

    # --- one answer and one tool call --------------------------------------------------
    def _prompt(self, request: Request) -> Prompt:
        episode = request.episode
        if episode.trace is None:
            prompt = self.prompt(episode.question.question, episode.steps, request.round)
            return prompt if request.attempt == 0 else self.method.reask(prompt, request.reply)
        if not episode.trace.ids:  # the first ask: the method's prompt, tokenized once
            episode.trace.add(self.llm.encode(self.prompt(episode.question.question, episode.steps, request.round)))
        return TokenIds(episode.trace.ids)

    def _harness_text(self, episode: Episode) -> str:
        """What the harness adds after the reply that made the episode's last step: the text that
        follows that reply in the method's next prompt (the observation, the next cue), found by
        rendering the prompt with a mark in the reply's place."""
        *before, last = episode.steps
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
            return None
        reply = completion.text if request.attempt == 0 else self.method.joined(request.reply, completion.text)
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
