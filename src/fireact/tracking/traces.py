"""Trajectories as MLflow traces: what the agent did, question by question, on MLflow's Traces page.

One trace per finished trajectory, in the run's experiment and linked to the run:

    <task>:<qid>                 AGENT   inputs: question, task, qid, sample; outputs: answer
      round 1                    CHAIN   outputs: thought, action, observation
        llm                      LLM     the prompt (or chat messages), the reply, token usage
        llm re-ask 1             LLM     a re-ask of a reply that held no action
        search                   TOOL    the argument, the observation (noisy: flagged, with the tool's own)
      round 2 ...

Tags: task, method, model, backend, tool, noise, seed, sample and whatever the caller adds (the
adapter, the stage). Assessments: exact_match (pass/fail) and f1 as code feedback, the gold
answer as the expectation `expected_answer`, so the Traces page filters by right and wrong.

Traces are logged on one background thread, so the rollout does not wait on the store, and in
the order the trajectories finished. MLflow can attach an assessment only to a trace already in
the store, so spans are exported as they end, not through MLflow's asynchronous queue. A trace
is logged after its trajectory is written: a resumed run traces only the questions it runs.
`tracker.traces` is the share of questions traced (0: none), chosen by a hash of the qid,
so a run and its resumes trace the same questions.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import mlflow
from mlflow.entities import AssessmentSource, SpanType
from mlflow.environment_variables import MLFLOW_ENABLE_ASYNC_TRACE_LOGGING
from mlflow.tracing.constant import SpanAttributeKey, TokenUsageKey, TraceMetadataKey

from fireact.calls import ModelCall, ToolCall
from fireact.secrets import Redactor
from fireact.trajectory import Trajectory

log = logging.getLogger(__name__)

SOURCE = AssessmentSource(source_type="CODE", source_id="fireact.tasks.metrics")


def traced(qid: str, share: float) -> bool:
    """Whether question `qid` is among the `share` of questions traced (the same on every run)."""
    if share >= 1.0:
        return True
    return int.from_bytes(hashlib.sha256(qid.encode()).digest()[:8], "big") / 2**64 < share


def sync_export() -> None:
    """Export spans as they end (see the module docstring); MLflow reads the setting when its tracer starts."""
    if MLFLOW_ENABLE_ASYNC_TRACE_LOGGING.get():
        os.environ[MLFLOW_ENABLE_ASYNC_TRACE_LOGGING.name] = "false"
        mlflow.tracing.reset()


class TraceLogger:
    """Logs trajectories of the run `run_id` in `experiment_id` as traces; `close()` waits for the last."""

    def __init__(self, run_id: str, experiment_id: str, redactor: Redactor, share: float = 1.0,
                 tags: dict[str, Any] | None = None):
        self.run_id, self.experiment_id, self.redactor, self.share = run_id, experiment_id, redactor, share
        self.tags = {k: str(v) for k, v in (tags or {}).items() if v is not None}
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="fireact-traces")  # one: traces in finishing order
        self.logged = self.failed = 0
        sync_export()

    def add(self, trajectory: Trajectory, calls: list[ModelCall | ToolCall]) -> None:
        if traced(trajectory.qid, self.share):
            self.pool.submit(self._log_safely, trajectory, calls)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        if self.failed:
            log.warning("%d of %d traces could not be logged (first error above); the trajectories are in the "
                        "run folder's JSONL all the same", self.failed, self.failed + self.logged)

    def _log_safely(self, trajectory: Trajectory, calls) -> None:
        try:
            log_trace(trajectory, calls, self.run_id, self.experiment_id, self.redactor, self.tags)
            self.logged += 1
        except Exception:  # a trace is a view of the run; losing one must not stop the rollout
            if not self.failed:
                log.warning("could not log the trace of %s", trajectory.qid, exc_info=True)
            self.failed += 1


def log_trace(trajectory: Trajectory, calls: list[ModelCall | ToolCall], run_id: str, experiment_id: str,
              redactor: Redactor, tags: dict[str, str]) -> str:
    """One trajectory as one trace (the tree in the module docstring); returns the trace's id."""
    t = trajectory
    labels = {"task": t.task, "method": t.method, "model": t.model, "backend": t.backend, "tool": t.tool,
              "noise": t.noise, "seed": t.seed, "sample": t.sample}
    root = mlflow.start_span_no_context(
        f"{t.task}:{t.qid}", span_type=SpanType.AGENT, experiment_id=experiment_id,
        start_time_ns=min((c.start_ns for c in calls), default=None),
        inputs=redactor.tree({"question": t.question, "task": t.task, "qid": t.qid, "sample": t.sample}),
        tags={**{k: str(v) for k, v in labels.items() if v not in (None, "")}, **tags},
        metadata={TraceMetadataKey.SOURCE_RUN: run_id},
    )
    for number in sorted({c.round for c in calls}):
        round_calls = [c for c in calls if c.round == number]
        # Round n wrote step n; a round whose request failed for good wrote none.
        step = t.steps[number - 1] if number <= len(t.steps) else None
        span = mlflow.start_span_no_context(f"round {number}", span_type=SpanType.CHAIN, parent_span=root,
                                            start_time_ns=min(c.start_ns for c in round_calls))
        for call in round_calls:
            if isinstance(call, ModelCall):
                _model_span(call, span, t.model, redactor)
            else:
                _tool_span(call, span, redactor)
        outputs = {"thought": step.thought, "action": step.action_text, "observation": step.observation} if step else None
        span.end(outputs=redactor.tree(outputs), end_time_ns=max(c.end_ns for c in round_calls))
    attributes = {"em": t.em, "f1": t.f1, "turns": t.turns, "format_errors": t.format_errors, "error": t.error}
    root.end(outputs=redactor.tree({"answer": t.answer}), end_time_ns=max((c.end_ns for c in calls), default=None),
             attributes={k: v for k, v in attributes.items() if v is not None})
    trace_id = root.trace_id
    if t.em is not None:
        mlflow.log_feedback(trace_id=trace_id, name="exact_match", value=t.em == 1.0, source=SOURCE)
        mlflow.log_feedback(trace_id=trace_id, name="f1", value=float(t.f1 or 0.0), source=SOURCE)
    mlflow.log_expectation(trace_id=trace_id, name="expected_answer", value=redactor.text(t.gold))
    return trace_id


def _model_span(call: ModelCall, parent, model: str, redactor: Redactor) -> None:
    chat = isinstance(call.prompt, list)
    span = mlflow.start_span_no_context(
        "llm" if call.attempt == 0 else f"llm re-ask {call.attempt}",
        span_type=SpanType.CHAT_MODEL if chat else SpanType.LLM, parent_span=parent, start_time_ns=call.start_ns,
        inputs=redactor.tree({"messages": call.prompt} if chat else {"prompt": call.prompt}),
        attributes={SpanAttributeKey.MODEL: model, SpanAttributeKey.CHAT_USAGE: {
            TokenUsageKey.INPUT_TOKENS: call.prompt_tokens, TokenUsageKey.OUTPUT_TOKENS: call.completion_tokens,
            TokenUsageKey.TOTAL_TOKENS: call.prompt_tokens + call.completion_tokens}},
    )
    span.end(outputs=redactor.tree({"text": call.text}), status="ERROR" if call.error else "OK",
             attributes={"error": call.error} if call.error else None, end_time_ns=call.end_ns)


def _tool_span(call: ToolCall, parent, redactor: Redactor) -> None:
    span = mlflow.start_span_no_context(call.action, span_type=SpanType.TOOL, parent_span=parent,
                                        start_time_ns=call.start_ns, inputs=redactor.tree({"argument": call.argument}))
    noisy = call.tool_observation is not None
    attributes = {"noisy": noisy, **({"tool_observation": redactor.text(call.tool_observation)} if noisy else {})}
    span.end(outputs=redactor.tree({"observation": call.observation}), attributes=attributes,
             status="ERROR" if call.error else "OK", end_time_ns=call.end_ns)
