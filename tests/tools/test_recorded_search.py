import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fireact.paths import REPO_ROOT, data_dir
from fireact.tools.base import EMPTY_QUERY, NO_RESULT, ToolError
from fireact.tools.recorded_search import RecordedCorpus, RecordedSearch, normalise_query
from fireact.trajectory_files import read_alpaca, read_chat, read_released_eval

PARAPHRASES = {
    "when was Woman's Day magazine first published": "1931",
    "what is the birthplace of Nivetha Thomas the actress": "Nivetha Thomas",
    "Who succeeded Stanley Baldwin as prime minister and who preceded him": "Baldwin",
}


@pytest.fixture(scope="module")
def tool() -> RecordedSearch:
    return RecordedSearch()


def released_searches() -> list[tuple[str, str]]:
    """Every recorded search in file order, walked here independently of the tool."""
    root = data_dir()
    sources = [
        (read_alpaca, sorted(root.glob("finetune/alpaca_format/*.json"))),
        (read_chat, sorted(root.glob("finetune/gpt_format/*.jsonl"))),
        (read_released_eval, sorted(root.glob("trajs/*.json"))),
    ]
    searches = []
    for reader, paths in sources:
        for path in paths:
            for trajectory in reader(path)[0]:
                searches += [
                    (step.argument, step.observation) for step in trajectory.steps
                    if step.action.lower() == "search" and step.argument is not None and step.observation is not None
                ]
    return searches


def test_every_recorded_query_replays_its_recorded_observation(tool):
    searches = released_searches()
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for query, observation in searches:
        seen = counts[" ".join(query.lower().split())]
        seen[observation] = seen.get(observation, 0) + 1
    # The documented rule: the most often recorded observation, ties to the first recorded.
    expected = {query: max(seen.items(), key=lambda item: item[1])[0] for query, seen in counts.items()}
    assert len(searches) > 15_000 and 4_800 < len(expected) < 5_000
    assert sum(len(seen) > 1 for seen in counts.values()) > 0  # the tie rule is exercised
    mismatches = [query for query, _ in searches if tool.run("search", query) != expected[" ".join(query.lower().split())]]
    assert mismatches == []


def test_conflicting_recordings_resolve_by_count_then_first_recorded():
    corpus = RecordedCorpus.from_searches(
        [("Tie", "first"), ("tie", "second"), ("most", "rare"), ("MOST", "common"), ("most ", "common")]
    )
    assert corpus.lookup("tie") == "first"
    assert corpus.lookup("most") == "common"
    assert corpus.searches == 5


def test_queries_match_across_case_unicode_form_and_white_space(tool):
    recorded = "Stanley Baldwin predecessor and successor"
    expected = tool.run("search", recorded)
    assert tool.run("search", "  stanley   BALDWIN\tpredecessor and\nsuccessor ") == expected
    assert normalise_query("Ｆｕｌｌwidth  Café") == "fullwidth café"


@pytest.mark.parametrize("query, relevant", PARAPHRASES.items())
def test_a_paraphrased_query_gets_a_relevant_recorded_result(tool, query, relevant):
    assert normalise_query(query) not in tool.corpus.answers
    observation = tool.run("search", query)
    assert relevant in observation
    assert observation in set(tool.corpus.answers.values())


def test_an_empty_query_and_one_of_only_stop_words_get_defined_observations(tool):
    assert tool.run("search", "") == EMPTY_QUERY
    assert tool.run("search", "   \n") == EMPTY_QUERY
    assert tool.run("search", "the of and") == NO_RESULT
    assert tool.run("search", "zzqxv wvvqz") == NO_RESULT


def test_actions_are_case_insensitive_and_unknown_ones_are_a_tool_error(tool):
    assert tool.run("Search", "Stanley Baldwin predecessor and successor") == tool.run("search", "stanley baldwin predecessor and successor")
    with pytest.raises(ToolError, match="offers search"):
        tool.run("lookup", "anything")


def test_answers_are_the_same_in_a_fresh_process(tool):
    queries = list(PARAPHRASES) + ["Eiffel Tower height", "who directed titanic 1997 film", "capital of australia"]
    script = (
        "import json, sys; from fireact.tools.recorded_search import RecordedSearch; t = RecordedSearch(); "
        "print(json.dumps([t.run('search', q) for q in json.loads(sys.argv[1])]))"
    )
    fresh = subprocess.run([sys.executable, "-c", script, json.dumps(queries)], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert json.loads(fresh.stdout) == [tool.run("search", q) for q in queries]
    assert [tool.run("search", q) for q in queries] == [tool.run("search", q) for q in queries]


def test_hydra_config_builds_the_tool():
    built = instantiate(OmegaConf.load(REPO_ROOT / "conf/tool/recorded_search.yaml"))
    assert isinstance(built, RecordedSearch) and built.name == "recorded_search"
    assert built.run("search", "stanley baldwin predecessor and successor") != NO_RESULT


def test_a_data_dir_without_recorded_files_is_a_clear_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="FIREACT_DATA_DIR"):
        RecordedSearch(data_dir=str(tmp_path))
