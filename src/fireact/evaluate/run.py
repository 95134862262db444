"""An evaluation run: model × backend × method × task × tool × noise over n questions.

Trajectories are appended to `trajectories.jsonl` in the output folder as each question
finishes; a rerun of the same command in the same folder skips the questions already there
(a torn last line is reported and its question redone), so a killed run resumes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from fireact.agents.rollout import Rollout
from fireact.evaluate.summary import print_summary, summarize
from fireact.llm.pricing import cost
from fireact.trajectory import Trajectory, append_jsonl, read_jsonl

log = logging.getLogger(__name__)


def load_done(path: Path, qids: set[str]) -> dict[str, Trajectory]:
    """Trajectories already written for these questions (the first record of each qid wins)."""
    if not path.exists():
        return {}
    trajectories, report = read_jsonl(path)
    report.warn()
    if report.failures:  # rewrite without the torn lines, so the file stays one record per line
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(t.to_dict(), ensure_ascii=False) + "\n" for t in trajectories))
        tmp.replace(path)
    done: dict[str, Trajectory] = {}
    for t in trajectories:
        if t.qid in qids:
            done.setdefault(t.qid, t)
    return done


def evaluate(cfg: DictConfig) -> dict[str, float]:
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    task = instantiate(cfg.task)
    questions = task.questions()
    method = instantiate(cfg.method)
    tool = instantiate(cfg.tool)
    noise = instantiate(cfg.noise)
    path = out_dir / "trajectories.jsonl"
    done = load_done(path, {q.qid for q in questions}) if cfg.resume else {}
    if not cfg.resume and path.exists():
        path.unlink()
    todo = [q for q in questions if q.qid not in done]
    log.info("%d questions, %d already done in %s, %d to run", len(questions), len(done), path, len(todo))

    if todo:
        llm = instantiate(cfg.backend)
        labels = {"backend": llm.backend, "model": llm.model, "tool": tool.name, "noise": noise.name}
        price = OmegaConf.to_container(cfg.model.price, resolve=True)
        rollout = Rollout(
            llm, method, task, tool, noise,
            cost=lambda pt, ct, seconds: cost(price, pt, ct, seconds),
            seed=cfg.seed, labels=labels, tool_workers=cfg.tool_workers,
        )
        with tqdm(total=len(questions), initial=len(done), desc="evaluate", unit="q") as bar:
            def write(trajectory: Trajectory) -> None:
                append_jsonl(path, trajectory)
                done[trajectory.qid] = trajectory
                bar.update(1)

            for start in range(0, len(todo), cfg.chunk_size):
                rollout.run(todo[start:start + cfg.chunk_size], on_finish=write)
        llm.close()
    tool.close()

    trajectories = [done[q.qid] for q in questions]
    summary = summarize(trajectories)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print_summary(summary, title=f"{task.name} · {cfg.method.get('_target_', '').rsplit('.', 1)[-1]} · {cfg.model.name}")
    print(f"trajectories: {path}\nsummary:      {out_dir / 'summary.json'}")
    return summary
