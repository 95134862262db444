"""`generate` with the embedded model as teacher, offline: successes and failures written
apart, a rerun does no repeated work, and the dry run estimates without spending."""

import json

from fireact.generate import generate
from fireact.tasks import HotpotQA
from fireact.trajectory import read_jsonl

SMALL = ["task.n=3", "method.max_rounds=2", "method.max_tokens=40", "method.max_retries=0"]


def written(path):
    return read_jsonl(path)[0] if path.exists() else []


def test_generate_keeps_successes_apart_and_a_rerun_does_no_repeated_work(compose_cfg, tmp_path):
    result = generate(compose_cfg("generate", *SMALL))
    kept, failed = written(tmp_path / "trajectories.jsonl"), written(tmp_path / "failures.jsonl")
    assert result["attempted"] == 3 == len(kept) + len(failed) and result["kept"] == len(kept)
    assert all(t.em == 1.0 for t in kept) and all(t.em == 0.0 and t.meta["reason"] for t in failed)
    evaluation = {q.qid for q in HotpotQA(n=500, shuffle_seed=233).questions()}
    assert not {t.qid for t in kept + failed} & evaluation  # training questions never overlap evaluation
    assert json.loads((tmp_path / "summary.json").read_text()) == result

    size = {p.name: p.stat().st_size for p in tmp_path.glob("*.jsonl")}
    again = generate(compose_cfg("generate", *SMALL, "backend.batch_size=0"))  # a backend that can't be built: never built
    assert again == result and {p.name: p.stat().st_size for p in tmp_path.glob("*.jsonl")} == size


def test_dry_run_estimates_tokens_and_cost_without_a_model(compose_cfg, tmp_path):
    estimate = generate(compose_cfg("generate", "model=gpt4", "backend=openai", "task.n=100", "dry_run=true"))
    assert estimate["questions"] == 100 and estimate["prompt_tokens"] > 100 * 900
    assert estimate["cost_usd"] > 0 and not list(tmp_path.glob("*.jsonl"))
