"""What a researcher sees in `make ui`, checked in a real browser: headless Chromium (Debian's
`chromium`, driven by Playwright) on the MLflow server over a store that a short real
evaluation wrote (the scripted loopback agent of test_traces). The Traces page lists each
question's trace with its assessments, a trace shows its rounds with their model and tool spans,
and the runs table names the run's dataset; the comparison view of a report's runs shows what
differs between them, and `report screenshot=true` takes it. Screenshots go to
outputs/browser_test/.

Skipped where no Chromium is installed (`make test` installs it with apt-get when run as root).
"""

from pathlib import Path

import mlflow
import pytest

from fireact import tracking
from fireact.evaluate.run import evaluate
from fireact.report import report
from fireact.tracking.compare_view import dismiss_tips, find_chromium, open_comparison
from fireact.trajectory_files import read_jsonl
from tests.llm.servers import FaultServer
from tests.tracking.test_traces import agent, settings

CHROMIUM = find_chromium()
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


# (fine-tuning, EM) of three evaluations that differ in their fine-tuning only
ARMS = [("none", 0.01), ("lora", 0.12), ("full", 0.16)]


def log_arms(compose_cfg, *overrides: str, arms=ARMS, settings: int = 0) -> None:
    """The arms as evaluate runs; `settings` more params that differ between them."""
    for finetune, em in arms:
        params = {"finetune": finetune, **{f"setting_{i}": f"{finetune} {i}" for i in range(settings)}}
        with tracking.start_run(compose_cfg("rescore", *overrides), stage="evaluate", run_name=f"arm {finetune}",
                                params=params):
            tracking.log_metrics({"em": em})


def test_the_comparison_view_shows_only_what_differs_between_the_runs(tracking_uri, compose_cfg, page):
    log_arms(compose_cfg, "experiment_name=compare-view", "+model=llama2_7b")
    runs = mlflow.search_runs(experiment_names=["compare-view"])
    shared = next(c.removeprefix("params.") for c in runs if c.startswith("params.") and runs[c].nunique() == 1)

    open_comparison(page, tracking_uri, runs)
    view = page.inner_text("body")
    names, rest = view.split("\nParameters\n")
    params, rest = rest.split("\nMetrics\n")
    metrics = rest.split("\nArtifacts\n")[0]
    assert all(f"arm {finetune}" in names for finetune, _ in ARMS)
    assert "finetune\tfull\tlora\tnone" in params  # the newest run first
    assert shared not in params  # the same in every run: hidden by "Show diff only"
    assert metrics.split() == ["Show", "diff", "only", "em", "0.16", "0.12", "0.01"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "compare_runs_view.png"))


def test_report_screenshot_takes_the_comparison_view_of_a_local_store(compose_cfg, tmp_path, monkeypatch):
    """The store is a local database: the report serves it on loopback for the browser. The runs
    differ in 41 params, a view taller than the window: the screenshot unrolls it. An earlier run
    of one cell, which the table does not show, is left out of the view."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = f"tracker.tracking_uri=sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    logged_to = [store, "experiment_name=report-shot", "+model=llama2_7b"]
    log_arms(compose_cfg, *logged_to, arms=[("lora", 0.05)])
    log_arms(compose_cfg, *logged_to, settings=40)

    report(compose_cfg("report", store, "experiments=[report-shot]", "screenshot=true", "turns=null"))
    shot = tmp_path / "out" / "plots" / "compare_runs.png"
    png = shot.read_bytes()
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")  # the IHDR chunk
    assert png[:4] == b"\x89PNG" and width == 1800 and height > 41 * 40  # 41 rows of params, ~40 px each
    assert "comparison of the 3 runs in the tables](plots/compare_runs.png)" in (tmp_path / "out" / "report.md").read_text()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    (SCREENSHOTS / "compare_runs.png").write_bytes(png)
