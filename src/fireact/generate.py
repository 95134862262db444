"""`python -m fireact.generate`: teacher (or student) rollouts on training questions.

A teacher (any backend: the OpenAI API, an OpenAI-compatible server, hf) runs a method on a
task's training questions. Trajectories that solve their question (EM = 1) go to
`trajectories.jsonl`; the others go to `failures.jsonl` with the reason. Both files are
appended as questions finish, and a rerun of the same command skips every question already
in either file. The folder's `run_config.yaml` records the settings they were written under;
a rerun with other settings stops before any work (fireact.run_folder), and
`resume=false` starts afresh (the old files go when the first new trajectory is written).
`samples=k` with `backend.temperature` above 0 draws k trajectories per question, each under
its own seeds (fireact.agents.rollout), keeping successes and failures alike: the material
of rejection-sampling rounds and of preference pairs (fireact.data.pairs).
`dry_run=true` estimates tokens and cost before anything is spent.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from fireact import threads, tracking
from fireact.agents.runner import (Agent, check_rollout_settings, load_written, resolve_method_format, run_agent,
                                   speed_keys, to_run)
from fireact.entry import stage_main
from fireact.evaluate.summary import print_summary
from fireact.llm.pricing import cost
from fireact.paths import data_dir
from fireact.run_folder import RunFolder
from fireact.terminal import command, shown_path
from fireact.trajectory import Trajectory
from fireact.trajectory_files import append_jsonl, read_alpaca

CHARS_PER_TOKEN = 4  # the usual rule of thumb for English text with GPT-style tokenizers


def not_results(cfg: DictConfig) -> tuple[str, ...]:
    """The keys that do not change what generate writes: the rollout's speed keys; task.n and
    samples (more questions or more samples per question resume the folder); dry_run (it writes
    no result)."""
    return (*speed_keys(cfg), "task.n", "samples", "dry_run")


def failure_reason(trajectory: Trajectory) -> str:
    if trajectory.error:
        return trajectory.error
    return f"wrong answer {trajectory.answer!r} (gold {trajectory.gold!r})"


def estimate(cfg: DictConfig, task, questions) -> dict[str, float]:
    """Tokens and cost of running the teacher, from the released ReAct trajectories' shape:
    their mean number of rounds and characters per round."""
    released, _ = read_alpaca(data_dir() / "finetune" / "alpaca_format" / "hotpotqa.json")
    rounds = statistics.fmean(t.turns for t in released)
    round_chars = statistics.fmean(len(t.react_text()) / t.turns for t in released)
    method = instantiate(cfg.method)
    examples = method.examples(task)
    if method.max_rounds == 1:
        rounds = 1
    prompt_tokens = completion_tokens = 0.0
    for q in questions:
        base = (len(examples) + len(q.question)) / CHARS_PER_TOKEN
        # round r re-sends the prompt with r - 1 earlier rounds; the model writes ~half a round
        prompt_tokens += sum(base + (r - 1) * round_chars / CHARS_PER_TOKEN for r in range(1, round(rounds) + 1))
        completion_tokens += rounds * round_chars / 2 / CHARS_PER_TOKEN
    price = OmegaConf.to_container(cfg.model.price, resolve=True)
    return {
        "questions": len(questions),
        "rounds_per_question": rounds,
        "prompt_tokens": round(prompt_tokens),
        "completion_tokens": round(completion_tokens),
        "cost_usd": cost(price, int(prompt_tokens), int(completion_tokens)),
    }


def summarize_generation(kept: list[Trajectory], failed: list[Trajectory]) -> dict[str, float]:
    every = kept + failed
    questions = {t.qid for t in every}
    return {
        "attempted": len(every),
        "kept": len(kept),
        "success_rate": len(kept) / len(every) if every else 0.0,
        "questions": len(questions),
        # a question with at least one success (pass@k for k samples a question)
        "questions_solved": len({t.qid for t in kept}),
        "failed_with_error": sum(t.error is not None for t in failed),
        "prompt_tokens": sum(t.prompt_tokens for t in every),
        "completion_tokens": sum(t.completion_tokens for t in every),
        "cost_usd": sum(t.cost for t in every),
    }


def generate(cfg: DictConfig) -> dict[str, float]:
    """Run (or finish) the generation and log it as one MLflow run (stage "generate"). Everything
    that can stop it on bad input or a service that is down is checked before the run opens."""
    resolve_method_format(cfg)  # method.format=auto: the model's own
    tracking.check(cfg)  # the tracking store first: down, nothing else is done
    task = instantiate(cfg.task)
    questions = task.questions()
    if cfg.dry_run:
        with tracking.start_run(cfg, stage="generate"):
            result = estimate(cfg, task, questions)
            tracking.log_metrics(result)
        print_summary(result, f"generate --dry-run · {task.name} · {cfg.model.name} (estimate)")
        return result

    samples = cfg.samples
    check_rollout_settings(cfg, samples)
    if samples > 1 and not cfg.backend.get("temperature"):
        raise ValueError(f"samples={samples} with backend.temperature=0 draws the same trajectory {samples} times; "
                         f"set backend.temperature above 0 (e.g. 0.7), or samples=1")
    out_dir = Path(cfg.output_dir)
    kept_path, failed_path = out_dir / "trajectories.jsonl", out_dir / "failures.jsonl"
    resume = cfg.resume
    folder = RunFolder(out_dir, cfg, results=[kept_path.name, failed_path.name], not_results=not_results(cfg))
    if resume:
        folder.check()  # written under other settings: stop now, naming the keys
    keys = {(q.qid, sample) for q in questions for sample in range(samples)}
    kept = {key: t for key, t in load_written([kept_path]).items() if key in keys} if resume else {}
    failed = {key: t for key, t in load_written([failed_path]).items() if key in keys and key not in kept} if resume else {}

    def write(trajectory: Trajectory) -> None:
        folder.before_first_result(fresh=not resume, also=["summary.json"])
        if trajectory.em == 1.0:
            append_jsonl(kept_path, trajectory)
            kept[trajectory.key] = trajectory
        else:
            trajectory.meta["reason"] = failure_reason(trajectory)
            append_jsonl(failed_path, trajectory)
            failed[trajectory.key] = trajectory

    done = {**kept, **failed}
    with threads.computing(cfg.threads), Agent(cfg, needed=bool(to_run(questions, done, samples))) as agent, \
            tracking.start_run(cfg, stage="generate"):
        run_agent(cfg, agent, task, questions, done, write, desc="generate", samples=samples)
        result = summarize_generation(list(kept.values()), list(failed.values()))
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "summary.json").write_text(json.dumps(result, indent=2))
        tracking.log_metrics(result)
        for path in (kept_path, failed_path, out_dir / "summary.json"):
            if path.exists():
                tracking.log_artifact(path)
    print_summary(result, f"generate · {task.name} · {cfg.model.name}")
    print(f"kept:     {kept_path}\nfailures: {failed_path}")
    return result


@stage_main("generate")
def main(cfg: DictConfig) -> None:
    generate(cfg)
    if not cfg.dry_run:
        kept = shown_path(Path(cfg.output_dir) / "trajectories.jsonl")  # the successes: SFT data
        print(f"next: {command('fireact.build_data', 'data_source=trajectories', f'data_source.paths=[{kept}]')}")


if __name__ == "__main__":
    main()
