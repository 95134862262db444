"""MLflow's run comparison view, taken in headless Chromium: the figure that shows an experiment's
runs side by side (`python -m fireact.report ... screenshot=true` writes plots/compare_runs.png).

The view (#/compare-runs in MLflow's UI) lists the runs with the params that differ between them
("Show diff only" on) and their metrics. A local store is served by `mlflow server` on loopback
while the page is open; a tracking server is used as it is. The browser is Debian's chromium
(`make browser`) or the one FIREACT_CHROMIUM names, driven by Playwright.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd

from fireact.tracking.server import tracking_server

VIEWPORT = {"width": 1800, "height": 1000}
# The tallest page taken: a comparison of many runs with many differing params is long.
MAX_HEIGHT = 12_000
# Sections of the view that say nothing about what the runs compare.
FOLDED = ("Visualizations", "Artifacts", "Tags")
# Tables that scroll inside the view (a long params or metrics table does; a metrics table's name
# column scrolls with it, hidden) are let out to their full height, and the panel that holds the
# view is scrolled back to its top.
UNROLL = """title => {
    for (let pass = 0; pass < 3; pass++)
        for (const e of document.querySelectorAll('*')) {
            const overflow = getComputedStyle(e).overflowY;
            if (['auto', 'scroll', 'hidden'].includes(overflow) && e.clientHeight > 0  // a folded section: 0
                    && e.scrollHeight > e.clientHeight + 1 && !e.contains(title))
                Object.assign(e.style, {maxHeight: 'none', height: 'auto', overflowY: 'visible'});
        }
    for (let e = title; e; e = e.parentElement)
        e.scrollTop = 0;
}"""
# The UI's first load on a busy 2-core machine.
LOAD_TIMEOUT_MS = 120_000


def find_chromium() -> str | None:
    return os.environ.get("FIREACT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def chromium() -> str:
    """The Chromium executable, or an error that says how to get one."""
    found = find_chromium()
    if found is None:
        raise FileNotFoundError("screenshot=true needs Chromium: `make browser` (apt-get install chromium, as root), "
                                "or FIREACT_CHROMIUM=/path/to/chromium; or leave screenshot=false")
    return found


def compare_url(server: str, runs: pd.DataFrame) -> str:
    """The comparison view of the runs (a frame with run_id and experiment_id, as mlflow.search_runs returns)."""
    run_ids = json.dumps(list(runs["run_id"]))
    experiment_ids = json.dumps(sorted(set(runs["experiment_id"])))
    return f"{server}/#/compare-runs?runs={run_ids}&experiments={experiment_ids}"


def dismiss_tips(page) -> None:
    """A fresh browser profile gets MLflow's "Detect Issues" tip over the page and its assistant
    panel beside it: both closed."""
    for name in ("Got it", "Close"):
        button = page.get_by_role("button", name=name, exact=True)
        if button.count() and button.first.is_visible():
            button.first.click()


def open_comparison(page, server: str, runs: pd.DataFrame) -> None:
    """Open the comparison of the runs in `page` (a Playwright page): tips closed, only the params
    and metrics that differ shown; the plots (of an arbitrary metric), the artifacts and the tags
    (folders, commits, command lines) folded."""
    page.goto(compare_url(server, runs))
    page.get_by_text(f"Comparing {len(runs)} Runs").wait_for(timeout=LOAD_TIMEOUT_MS)
    dismiss_tips(page)
    for switch in page.get_by_role("switch").all():  # "Show diff only", one per section
        if switch.get_attribute("aria-checked") != "true":
            switch.click()
    for section in FOLDED:
        page.get_by_text(section, exact=True).click()


def screenshot(store_uri: str, runs: pd.DataFrame, out: Path) -> Path:
    """The comparison view of the runs in the store, as a PNG at `out`."""
    executable = chromium()
    try:
        from playwright.sync_api import sync_playwright  # in the test extra: only this view needs it
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError("screenshot=true needs Playwright: pip install playwright (`make install` has it)") from err
    out.parent.mkdir(parents=True, exist_ok=True)
    with tracking_server(store_uri) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(LOAD_TIMEOUT_MS)
            open_comparison(page, server, runs)
            # The view scrolls inside a panel, which a full-page screenshot does not unroll: the
            # window is made as tall as the view, whose last section is folded.
            page.get_by_text(f"Comparing {len(runs)} Runs").evaluate(UNROLL)
            last = page.get_by_text(FOLDED[-1], exact=True).bounding_box()
            height = int(last["y"] + last["height"]) + 40
            page.set_viewport_size({"width": VIEWPORT["width"], "height": min(max(height, VIEWPORT["height"]), MAX_HEIGHT)})
            page.wait_for_timeout(500)  # the layout settles at the new height
            page.screenshot(path=str(out))
        finally:
            browser.close()
    return out
