"""What a researcher sees in `make ui`, checked in a real browser: headless Chromium (Debian's
`chromium`, driven by Playwright) on the MLflow server over a store that a short real
evaluation wrote (the scripted loopback agent of test_traces). The Traces page lists each
question's trace with its assessments, a trace shows its rounds with their model and tool spans,
and the runs table names the run's dataset. Screenshots go to outputs/browser_test/.

Skipped where no Chromium is installed (`make test` installs it with apt-get when run as root).
"""

import os
import shutil
from pathlib import Path

import mlflow
import pytest

from fireact.evaluate.run import evaluate
from fireact.trajectory_files import read_jsonl
from tests.llm.servers import FaultServer
from tests.tracking.test_traces import agent, settings

CHROMIUM = os.environ.get("FIREACT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "outputs" / "browser_test"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: `apt-get install chromium` (make test does it as root), "
                                                "or point FIREACT_CHROMIUM at one"),
]


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 2200, "height": 1000})
            page.set_default_timeout(60_000)  # the UI's first load on a busy 2-core machine
            yield page
        finally:
            browser.close()


def dismiss_tips(page) -> None:
    """A fresh browser profile gets MLflow's "Detect Issues" tip over the page and its assistant
    panel beside it, over the assessment columns: both closed for the screenshots."""
    for name in ("Got it", "Close"):
        button = page.get_by_role("button", name=name, exact=True)
        if button.count() and button.first.is_visible():
            button.first.click()


def test_the_traces_page_shows_each_question_with_assessments_and_tool_spans(tracking_uri, compose_cfg, tmp_path, page):
    with FaultServer(agent) as server:
        evaluate(compose_cfg("evaluate", *settings(server, "task.n=3", "experiment_name=browser")))
    trajectories = read_jsonl(tmp_path / "out" / "trajectories.jsonl")[0]
    experiment = mlflow.get_experiment_by_name("browser").experiment_id
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    page.goto(f"{tracking_uri}/#/experiments/{experiment}/traces")
    # Rows by their role attribute: while MLflow's tip is open, the page behind it is hidden from
    # the accessibility tree that get_by_role reads.
    rows = page.locator('[role="row"]')
    for t in trajectories:  # one row per question: its input, and its assessments in their columns
        row = rows.filter(has_text=t.question)
        row.wait_for()
        text = row.inner_text()
        assert ("True" if t.em == 1.0 else "False") in text and t.gold in text
    header = rows.first.inner_text()
    assert all(name in header for name in ("exact_match", "f1", "expected_answer"))
    dismiss_tips(page)
    page.screenshot(path=str(SCREENSHOTS / "traces.png"))

    searched = next(t for t in trajectories if t.tool_calls)
    page.get_by_text(searched.question).first.click()
    trace = page.get_by_role("dialog")
    trace.get_by_text("round 1", exact=True).wait_for()
    spans = trace.inner_text()
    assert f"hotpotqa:{searched.qid}" in spans and "llm" in spans
    assert spans.count("search") >= searched.tool_calls  # one tool span per search
    trace.get_by_text("search", exact=True).first.click()
    observation = next(step.observation for step in searched.steps if step.is_tool_call)
    trace.get_by_text(observation[:60]).first.wait_for()  # the tool span's output: the observation
    page.screenshot(path=str(SCREENSHOTS / "trace.png"))

    page.goto(f"{tracking_uri}/#/experiments/{experiment}/runs")
    page.get_by_text("hotpotqa:dev[0:3]").first.wait_for()  # the Dataset column: the questions evaluated
    page.screenshot(path=str(SCREENSHOTS / "runs.png"))
