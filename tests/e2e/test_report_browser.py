"""The report in a real browser: Debian's chromium, headless, driven over the DevTools protocol.

The page of a real tiny-model run must load without console errors, failed loads or any network
request, show every plot with its series, filter examples, and fit a phone's width. Screenshots are
kept in tests/artifacts/ (gitignored) for a person to look at.

Chromium is installed by scripts/install-chromium.sh where missing; the test is skipped, saying why,
only when it cannot be installed (not root, no apt-get).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from _chromium import Browser, find_chromium
from _report_run import ROOT, train_and_eval

from honed.runs.rundir import RunDir

ARTIFACTS = ROOT / "tests" / "artifacts"
PLOTS = """JSON.stringify(Array.from(document.querySelectorAll("svg.plot")).map(svg => {
  const box = svg.getBoundingClientRect();
  return [svg.dataset.plot, svg.querySelectorAll('[id^="' + svg.dataset.plot + '-series-"]').length,
          Math.round(box.width), Math.round(box.height), svg.querySelectorAll("path, text").length];
}))"""


@pytest.fixture(scope="module")
def chromium() -> str:
    found = find_chromium()
    if found is None:
        subprocess.run(["bash", str(ROOT / "scripts" / "install-chromium.sh")], check=False, timeout=900)
        found = find_chromium()
    if found is None:
        pytest.skip("no chromium, and scripts/install-chromium.sh could not install it (needs root and apt-get)")
    return found


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HONED_HOME", str(home))
        out = tmp_path_factory.mktemp("browser") / "run"
        train_and_eval(out)
    return RunDir(out).report_html


def _keep(path: Path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy2(path, ARTIFACTS / path.name)


def test_report_renders_in_chromium_without_errors(chromium, report, tmp_path) -> None:
    run = RunDir(report.parent)
    systems = list(run.read_summary().systems)
    with Browser.start(chromium, log=tmp_path / "chromium.log") as browser:
        page = browser.open(report.resolve().as_uri(), width=1280, height=900)
        plots = {name: (series, width, height, marks) for name, series, width, height, marks
                 in json.loads(page.evaluate(PLOTS))}
        page.screenshot(tmp_path / "report-desktop.png")
        # the filters work: "wrong only" shows exactly the rows the tuned model got wrong
        total = page.evaluate("document.querySelectorAll('#run-1-examples-table tbody tr').length")
        wrong = page.evaluate("document.querySelectorAll('#run-1-examples-table tbody tr[data-wrong=\"1\"]').length")
        page.evaluate("(() => { const box = document.querySelector('.filters input[name=wrong]');"
                      " box.checked = true; box.dispatchEvent(new Event('change')); })()")
        shown = page.evaluate("Array.from(document.querySelectorAll('#run-1-examples-table tbody tr'))"
                              ".filter(r => !r.hidden).length")
        counter = page.evaluate("document.querySelector('.filters .count').textContent")
        problems = page.problems()
        phone = browser.open(report.resolve().as_uri(), width=390, height=844, mobile=True)
        overflow = phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        phone.screenshot(tmp_path / "report-phone.png", width=390)
        problems += phone.problems()
    for shot in ("report-desktop.png", "report-phone.png"):
        assert (tmp_path / shot).stat().st_size > 20_000
        _keep(tmp_path / shot)
    assert problems == []
    assert plots["loss"][0] == 2 and plots["lr"][0] == 1 and plots["tokens_per_s"][0] == 1
    assert plots["metrics"][0] == len(systems)
    assert plots["fields"][0] == 2  # JSON task: precision and recall per field
    for name, (_, width, height, marks) in plots.items():
        assert width > 300 and height > 100 and marks > 10, name
    assert total == 10 and shown == wrong and counter == f"showing {wrong} of {total}"
    assert overflow <= 0  # nothing wider than a phone: wide tables scroll inside their box


def test_console_errors_and_network_requests_are_caught(chromium, tmp_path) -> None:
    """The check above would see a broken page: a script error, console.error and a request to a server."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!doctype html><title>bad</title><img src='http://127.0.0.1:9/x.png'>"
                   "<script>console.error('boom'); undefinedFunction();</script>")
    with Browser.start(chromium) as browser:
        problems = browser.open(bad.resolve().as_uri()).problems()
    text = "\n".join(problems)
    assert "console.error: boom" in text and "undefinedFunction" in text and "network request: http://127.0.0.1:9" in text
