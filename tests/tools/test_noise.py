import random
from concurrent.futures import ThreadPoolExecutor

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fireact.paths import REPO_ROOT
from fireact.tools.noise import Clean, NoneObservation, RandomObservation

CALLS = 2000


def observation(episode: int, round_: int) -> str:
    return f"result {round_} of question {episode}"


def run_episodes(noise, episodes: range, rounds: int = 3) -> dict[str, str]:
    """Each episode's rounds in order, as the agent makes them; key -> what the agent saw."""
    seen = {}
    for episode in episodes:
        for round_ in range(1, rounds + 1):
            key = f"q{episode}/{round_}"
            seen[key] = noise.apply(observation(episode, round_), key)
    return seen


def test_clean_is_the_identity():
    noise = Clean()
    texts = ["", "None", "Paris", "a\nmultiline observation"]
    assert [noise.apply(text, f"q{i}/1") for i, text in enumerate(texts)] == texts


@pytest.mark.parametrize("p", [0.5, 0.2, 0.9])
def test_none_obs_rate_matches_p(p):
    noise = NoneObservation(p=p, seed=3)
    rate = sum(noise.apply("real", f"q{i}/1") == "None" for i in range(CALLS)) / CALLS
    assert abs(rate - p) < 0.05


@pytest.mark.parametrize("p", [0.5, 0.2])
def test_random_obs_replaces_later_rounds_at_rate_p_with_earlier_observations_of_the_episode(p):
    seen = run_episodes(RandomObservation(p=p, seed=3), range(CALLS), rounds=3)
    first_rounds = [seen[f"q{e}/1"] == observation(e, 1) for e in range(CALLS)]
    assert all(first_rounds)  # nothing earlier to show
    later = [(e, r) for e in range(CALLS) for r in (2, 3)]
    replaced = [(e, r) for e, r in later if seen[f"q{e}/{r}"] != observation(e, r)]
    assert abs(len(replaced) / len(later) - p) < 0.05
    assert all(seen[f"q{e}/{r}"] in {observation(e, earlier) for earlier in range(1, r)} for e, r in replaced)
    third_rounds = [seen[f"q{e}/3"] for e, r in replaced if r == 3]
    # a replaced third round shows round 1 or round 2 about equally often
    assert 0.4 < sum(text.startswith("result 1 ") for text in third_rounds) / len(third_rounds) < 0.6


@pytest.mark.parametrize("make", [lambda seed: NoneObservation(seed=seed), lambda seed: RandomObservation(seed=seed)])
def test_noise_is_fixed_by_seed_whatever_the_thread_timing(make):
    sequential = run_episodes(make(7), range(300))
    order = list(range(300))
    random.Random(1).shuffle(order)
    with ThreadPoolExecutor(max_workers=8) as pool:
        parts = list(pool.map(lambda episode: run_episodes(make(7), range(episode, episode + 1)), order))
    shared = make(7)
    with ThreadPoolExecutor(max_workers=8) as pool:
        shared_parts = list(pool.map(lambda episode: run_episodes(shared, range(episode, episode + 1)), order))
    assert {k: v for part in parts for k, v in part.items()} == sequential
    assert {k: v for part in shared_parts for k, v in part.items()} == sequential
    assert run_episodes(make(8), range(300)) != sequential


def test_a_round_applied_again_gets_the_same_observation():
    noise = RandomObservation(p=1.0, seed=0)
    noise.apply("first", "q/1")
    assert noise.apply("second", "q/2") == "first"
    noise.apply("third", "q/3")
    assert noise.apply("second", "q/2") == "first"  # only what came before round 2


def test_bad_settings_and_keys_are_clear_errors():
    with pytest.raises(ValueError, match="between 0 and 1"):
        NoneObservation(p=1.5)
    with pytest.raises(ValueError, match="<episode>/<round>"):
        RandomObservation().apply("text", "no-round")


@pytest.mark.parametrize("name, kind", [("clean", Clean), ("none_obs", NoneObservation), ("random_obs", RandomObservation)])
def test_hydra_configs_build_each_noise_seeded_by_the_run(name, kind):
    group = OmegaConf.load(REPO_ROOT / f"conf/noise/{name}.yaml")
    noise = instantiate(OmegaConf.create({"seed": 5, "noise": group}).noise)
    assert type(noise) is kind and noise.name == name
    if name != "clean":
        assert noise.p == 0.5  # the paper's setting
        assert noise.seed == 5
        assert instantiate(OmegaConf.create({"noise": group}).noise).seed == 0
