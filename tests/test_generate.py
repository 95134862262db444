"""`generate` with the embedded model as teacher, offline: successes and failures written
apart, a rerun does no repeated work, and the dry run estimates without spending."""

import json

import pytest

from fireact.generate import generate
from fireact.tasks import HotpotQA
from fireact.trajectory_files import read_jsonl

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


SAMPLED = ["task.n=2", "method.format=alpaca", "method.max_rounds=2", "method.max_tokens=24", "method.max_retries=0",
           "backend.temperature=1.0"]


def by_key(folder):
    return {t.key: t.react_text() for name in ("trajectories.jsonl", "failures.jsonl") for t in written(folder / name)}


def test_samples_are_reproducible_per_question_and_sample_and_resume_one_by_one(compose_cfg, tmp_path):
    first = generate(compose_cfg("generate", *SAMPLED, "samples=2"))
    two = by_key(tmp_path)
    assert first["attempted"] == 4 and sorted(sample for _, sample in two) == [0, 0, 1, 1]
    assert len(set(two.values())) > 2  # samples differ
    more = generate(compose_cfg("generate", *SAMPLED, "samples=3"))  # the same folder: only sample 2 is new
    three = by_key(tmp_path)
    assert more["attempted"] == 6 and {k: three[k] for k in two} == two
    fresh = compose_cfg("generate", *SAMPLED, "samples=3")
    fresh.output_dir = str(tmp_path / "fresh")
    generate(fresh)
    assert by_key(tmp_path / "fresh") == three  # each (question, sample) draws the same, however the runs were cut


def test_samples_without_a_temperature_is_a_clear_error(compose_cfg):
    with pytest.raises(ValueError, match="set backend.temperature above 0"):
        generate(compose_cfg("generate", "task.n=1", "samples=2"))
