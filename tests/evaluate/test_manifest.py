"""Manifests: what an evaluation's numbers compare with. The pipeline's paired tests, rescore's
paired table and report's tables flag results measured in different environments."""

import json

import pandas as pd

from fireact.agents.methods import ReAct, SearchR1
from fireact.evaluate import manifest as manifests
from fireact.evaluate.stats import compare
from fireact.pipeline import paired_rows, verdict_lines
from fireact.report import TableSpec, incomparable_rows
from fireact.tasks import HotpotQA
from fireact.tasks.base import Question
from fireact.tools.noise import Clean, NoneObservation, RandomObservation
from fireact.trajectory import Trajectory

from tests.agents.test_rollout import DictTool

QUESTIONS = [Question("1", "Who named Milhouse?", "Richard Nixon"), Question("2", "Which is first?", "Arthur's Magazine")]


def manifest(method=None, tool=None, noise=None, questions=QUESTIONS):
    return manifests.build(HotpotQA(), questions, method or ReAct(), tool or DictTool({}), noise or Clean())


def test_the_environment_and_the_protocol_are_told_apart():
    base = manifest()
    assert manifests.differences(base, manifest()) == {"environment": [], "protocol": []}
    assert manifests.differences(base, manifest(method=ReAct(format="alpaca", max_rounds=6))) == \
        {"environment": [], "protocol": ["format", "prompt_hash", "max_rounds"]}
    assert manifests.differences(base, manifest(method=SearchR1()))["protocol"] == \
        ["method", "format", "prompt_hash", "max_rounds", "max_tokens"]
    other = manifest(noise=NoneObservation(p=0.5), questions=QUESTIONS[:1])
    assert manifests.differences(base, other)["environment"] == ["questions", "questions_hash", "noise"]
    assert manifests.differences(base, None) == {"environment": [], "protocol": []}  # unknown, not different
    json.dumps(base)  # it goes into summary.json and the run's params as it is


def test_a_noise_is_recorded_by_its_settings_not_its_working_state():
    # RandomObservation holds a lock and the episodes it has seen: neither is the environment,
    # and a lock's repr differs in every process, so two runs of one setting would look different.
    assert json.loads(manifest(noise=RandomObservation(p=0.5, seed=3))["noise"]) == {"name": "random_obs", "p": 0.5, "seed": 3}
    assert manifest(noise=RandomObservation())["noise"] == manifest(noise=RandomObservation())["noise"]


def test_a_prompt_hash_follows_the_prompt_text_not_the_question():
    assert manifest()["prompt_hash"] == manifests.build(HotpotQA(), QUESTIONS[:1], ReAct(), DictTool({}), Clean())["prompt_hash"]
    assert manifest()["prompt_hash"] != manifest(method=ReAct(format="alpaca"))["prompt_hash"]


def test_the_pipeline_says_a_pair_from_different_environments_is_not_comparable():
    result = compare({"1": {"em": 1, "f1": 1}, "2": {"em": 0, "f1": 0}}, {"1": {"em": 0, "f1": 0}, "2": {"em": 0, "f1": 0}})
    same = manifests.differences(manifest(), manifest(method=ReAct(format="alpaca")))
    assert len(verdict_lines(result, "fine-tuned", "prompted", same)) == 1
    assert ("settings that differ", "settings that differ (manifest)", "protocol: format, prompt_hash") in \
        paired_rows(result, "fine-tuned", "prompted", same)
    tool = DictTool({})
    tool.result_config = lambda: {"corpus_hash": "abc", "topk": 5}
    apart = manifests.differences(manifest(), manifest(tool=tool))
    first, verdict = verdict_lines(result, "fine-tuned", "prompted", apart)
    assert first.startswith("NOT COMPARABLE: fine-tuned and prompted") and "differing: tool_config" in first
    assert verdict.startswith("No significant EM difference")


def test_report_flags_a_row_whose_cells_differ_in_environment():
    def run(task, agent, tool_config, start):
        return {"params.task": task, "tags.agent": agent, "params.manifest.tool_config": tool_config,
                "params.manifest.noise": "clean", "start_time": start, "metrics.em": 0.1}

    runs = pd.DataFrame([run("hotpotqa", "prompted", '{"topk": 3}', 1), run("hotpotqa", "fine-tuned", '{"topk": 3}', 2),
                         run("bamboogle", "prompted", '{"topk": 3}', 3), run("bamboogle", "fine-tuned", '{"topk": 5}', 4)])
    spec = TableSpec(rows="task", cols="tags.agent")
    assert incomparable_rows(runs, spec) == [
        "NOT COMPARABLE: the cells of row 'bamboogle' were measured in different settings (differing: tool_config)."]
    runs.loc[3, "params.manifest.tool_config"] = '{"topk": 3}'
    runs = pd.concat([runs, pd.DataFrame([run("bamboogle", "fine-tuned", '{"topk": 5}', 0)])])  # older: not the cell's
    assert incomparable_rows(runs, spec) == []


def test_rescore_files_compare_by_their_trajectories_labels():
    def labelled(tool, noise):
        return [Trajectory("hotpotqa", "1", "q", "g", tool=tool, noise=noise)]

    assert manifests.differences(manifests.of_trajectories(labelled("recorded_search", "clean")),
                                 manifests.of_trajectories(labelled("retriever", "clean")))["environment"] == ["tool"]
    assert manifests.differences(manifests.of_trajectories(labelled("", "")),  # a released file: unlabelled
                                 manifests.of_trajectories(labelled("retriever", "clean")))["environment"] == []


def test_report_does_not_flag_what_a_tables_columns_vary_on_purpose():
    runs = pd.DataFrame([{"params.model": "smollm2", "params.task": task, "params.manifest.task": task,
                          "params.manifest.questions_hash": task[:3], "params.manifest.noise": "clean",
                          "start_time": i, "metrics.em": 0.1} for i, task in enumerate(["hotpotqa", "bamboogle"])])
    assert incomparable_rows(runs, TableSpec(rows="model", cols="task")) == []
    runs.loc[1, "params.manifest.noise"] = "none_obs"
    assert incomparable_rows(runs, TableSpec(rows="model", cols="task")) == [
        "NOT COMPARABLE: the cells of row 'smollm2' were measured in different settings (differing: noise)."]
