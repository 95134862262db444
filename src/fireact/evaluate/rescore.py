"""Re-score trajectory files over a stated question set (`python -m fireact.rescore`).

Each file (ours: *.jsonl; the released evaluation files: *.json; fireact.trajectory.file_format) is scored over the task's
questions (default: the 500 HotpotQA evaluation questions): every answer is scored again with
the task's own scoring against the task's gold answer, questions missing from the file count as
failures, and the agreement with the EM stored in the file is reported. With two or more files,
the oracle and random choice among them are reported too (fireact.evaluate.oracle), and how
often each file's trajectory is the same as the first file's (fireact.evaluate.agreement: e.g.
the same greedy agent run by two backends). `unseen_by` leaves out the questions that an
agent's training data holds (fireact.data.contamination).
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from fireact import terminal, tracking
from fireact.data.contamination import questions_unseen_by
from fireact.evaluate import manifest as manifests, stats
from fireact.evaluate.agreement import agreement
from fireact.evaluate.files import write_evaluation
from fireact.evaluate.oracle import em_by_qid, method_choice
from fireact.evaluate.summary import summarize
from fireact.paths import data_dir
from fireact.tasks import Question, Task
from fireact.trajectory import Trajectory
from fireact.trajectory_files import read_trajectory_file

log = logging.getLogger(__name__)


def find_files(patterns: Sequence[str]) -> list[Path]:
    """Paths or glob patterns; a relative one is looked up in the current folder, then the data folder."""
    found: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) or (
            [] if Path(pattern).is_absolute() else sorted(glob.glob(str(data_dir() / pattern)))
        )
        if not matches:
            raise FileNotFoundError(
                f"no trajectory file matches {pattern!r} (looked in {Path.cwd()} and {data_dir()}); "
                f"pass existing files, e.g. files=[outputs/evaluate/RUN/trajectories.jsonl]"
            )
        found += [Path(m) for m in matches if Path(m) not in found]
    return found


def file_labels(paths: Sequence[Path]) -> list[str]:
    """Each file's name in the tables: a run's trajectories.jsonl by its folder (the overrides),
    other files by their stem; when two would share a name (the evaluate_finetuned folders of a
    sweep's jobs, say), each by its path below the files' common folder."""
    named = lambda path: path.parent if path.name == "trajectories.jsonl" else path.with_suffix("")  # noqa: E731
    labels = [named(path).name for path in paths]
    if len(set(labels)) < len(labels):
        common = Path(os.path.commonpath([path.parent for path in paths]))
        labels = [str(named(path).relative_to(common)) for path in paths]
    return labels


@dataclass
class Rescored:
    trajectories: list[Trajectory]  # the file's trajectories of the question set, re-scored, in question order
    summary: dict[str, float]
    disagreements: list[tuple[str, float, float]] = field(default_factory=list)  # (qid, stored em, new em)


def rescore(trajectories: Sequence[Trajectory], task: Task, questions: Sequence[Question]) -> Rescored:
    """Score each question's (first) trajectory again against the task's gold; missing ones count as failures.

    The summary adds: missing (questions with no trajectory), extra (trajectories of other
    questions, ignored), stored_em_compared and agreement (share of those whose stored EM equals
    the new one).
    """
    by_qid: dict[str, Trajectory] = {}
    for t in trajectories:
        by_qid.setdefault(t.qid, t)
    asked = {q.qid for q in questions}
    rescored, disagreements = [], []
    for q in questions:
        if (t := by_qid.get(q.qid)) is None:
            continue
        score = task.score(t.answer or "", q.gold)
        rescored.append(dataclasses.replace(t, gold=q.gold, em=score["em"], f1=score["f1"]))
        if t.em is not None and t.em != score["em"]:
            disagreements.append((q.qid, t.em, score["em"]))
    compared = sum(by_qid[q.qid].em is not None for q in questions if q.qid in by_qid)
    summary = summarize(rescored, n_questions=len(questions))
    summary.update(
        missing=len(questions) - len(rescored),
        extra=sum(qid not in asked for qid in by_qid),
        stored_em_compared=compared,
        agreement=(compared - len(disagreements)) / compared if compared else float("nan"),
    )
    return Rescored(rescored, summary, disagreements)


def scores_by_qid(result: Rescored) -> dict[str, dict[str, float]]:
    """{qid: {em, f1}} of the questions the file has (stats.compare counts the others as failures)."""
    return {t.qid: {"em": t.em, "f1": t.f1} for t in result.trajectories}


def print_results(results: dict[str, Rescored], choice: dict[str, float] | None, console: Console,
                  notes: list[str] = ()) -> None:
    n = next(iter(results.values())).summary["n"]
    table = Table(title=f"re-scored over {n} questions (missing ones count as failures; 95% bootstrap intervals)")
    table.add_column("file", overflow="fold", min_width=20)
    for header in ("missing", "EM", "F1", "turns", "tools", "agree"):
        table.add_column(header, justify="right", no_wrap=True)
    for name, result in results.items():
        s = result.summary
        table.add_row(
            name, str(s["missing"]), stats.with_interval(s, "em"), stats.with_interval(s, "f1"),
            f"{s['turns_mean']:.2f}±{s['turns_std']:.2f}", f"{s['tool_calls_mean']:.2f}", f"{s['agreement']:.3f}",
        )
    terminal.show(table, to=console)
    if len(results) > 1:
        first, *others = results
        paired = Table(title=f"each file - {first}, question by question over all {n} (95% paired-bootstrap intervals)")
        paired.add_column("file", overflow="fold", min_width=20)
        holm = len(others) > 1  # several comparisons: each also read at its Holm-adjusted p
        for header in ("EM difference", "F1 difference", "only it right", f"only {first} right", "McNemar p",
                       *(["Holm p"] if holm else [])):
            paired.add_column(header, justify="right", overflow="fold")
        for name in others:
            s = {k.removesuffix("_vs_first"): v for k, v in results[name].summary.items() if k.endswith("_vs_first")}
            paired.add_row(name, stats.with_interval(s, "em_diff"), stats.with_interval(s, "f1_diff"),
                           str(s["only_a_right"]), str(s["only_b_right"]), f"{s['mcnemar_p']:.3g}",
                           *([f"{s['mcnemar_p_holm']:.3g}"] if holm else []))
        terminal.show(paired, to=console)
        for note in notes:
            console.print(note)
        rows = Table(title=f"the same as {first} (over the questions both have)")
        rows.add_column("file", overflow="fold", min_width=20)
        for header in ("compared", "trajectory", "answer", "first step"):
            rows.add_column(header, justify="right", no_wrap=True)
        for name in others:
            s = results[name].summary
            rows.add_row(name, str(s["compared_as_first"]), f"{s['same_trajectory_as_first']:.3f}",
                         f"{s['same_answer_as_first']:.3f}", f"{s['same_first_step_as_first']:.3f}")
        terminal.show(rows, to=console)
    if choice:
        rows = Table(title="choosing among the files per question")
        rows.add_column("metric", overflow="fold")
        rows.add_column("EM", justify="right", no_wrap=True)
        for key, value in choice.items():
            rows.add_row(key, f"{value:.3f}")
        terminal.show(rows, to=console)


def run(cfg: DictConfig) -> dict[str, dict[str, float]]:
    """Re-score cfg.files over cfg.task's questions; write and log the results; return the summaries."""
    out_dir = Path(cfg.output_dir)
    with tracking.start_run(cfg, stage="rescore"):
        task = instantiate(cfg.task)
        questions = task.questions()
        if cfg.unseen_by:
            asked = len(questions)
            questions = questions_unseen_by(questions, [Path(p) for p in cfg.unseen_by], task.name)
            log.info("%d of the %d questions are in the training data of %s: re-scoring the other %d",
                     asked - len(questions), asked, list(cfg.unseen_by), len(questions))
        results: dict[str, Rescored] = {}
        paths = find_files(list(cfg.files))
        for path, name in zip(paths, file_labels(paths)):
            trajectories, report = read_trajectory_file(path, task=task.name)
            report.warn()
            results[name] = rescore(trajectories, task, questions)
            for qid, stored, new in results[name].disagreements[:5]:
                log.warning("%s: question %s stored em %s, re-scored %s", name, qid, stored, new)
            with tracking.start_run(cfg, stage="rescore", run_name=name, params={"file": str(path), "file_label": name}):
                files = write_evaluation(results[name].trajectories, results[name].summary, out_dir / name, title=name)
                tracking.log_evaluation(results[name].summary, files)
        choice, notes = None, []
        if len(results) > 1:
            first, *others = results.values()
            qids = [q.qid for q in questions]
            paired = [stats.compare(scores_by_qid(result), scores_by_qid(first), qids) for result in others]
            stats.adjust_for_multiple(paired)
            first_name, *other_names = results
            for name, result, comparison in zip(other_names, others, paired):
                differ = manifests.differences(manifests.of_trajectories(result.trajectories),
                                               manifests.of_trajectories(first.trajectories))
                if (note := manifests.incomparable(name, first_name, differ)) is not None:
                    notes.append(note)
                result.summary.update({f"{k}_as_first": v for k, v in agreement(first.trajectories, result.trajectories).items()})
                result.summary.update({f"{k}_vs_first": v for k, v in comparison.items()})
            scores = {name: em_by_qid(result.trajectories) for name, result in results.items()}
            choice = method_choice(scores, [q.qid for q in questions], seed=cfg.seed)
            tracking.log_metrics(choice)
        summaries = {name: result.summary for name, result in results.items()}
        write_results(out_dir, summaries, choice)
        tracking.log_artifact(out_dir / "rescore.csv")
        if choice:
            tracking.log_artifact(out_dir / "method_choice.json")
        print_results(results, choice, terminal.console(), notes)
    print(f"results: {out_dir / 'rescore.csv'}")
    return summaries


def write_results(out_dir: Path, summaries: dict[str, dict[str, float]], choice: dict[str, float] | None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for summary in summaries.values() for k in summary))
    with (out_dir / "rescore.csv").open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=["file", *keys])
        writer.writeheader()
        for name, summary in summaries.items():
            writer.writerow({"file": name, **summary})
    if choice:
        (out_dir / "method_choice.json").write_text(json.dumps(choice, indent=2))
