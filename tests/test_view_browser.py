"""tts view in a real browser (headless Chromium driven by selenium): pages rendered from real result files
of the embedded model and the testbed load without console errors, draw every tree node, show a node's
step and scores on a click, filter their list, keep hostile text as text, and open a 10,000-problem file
quickly. Skipped, with the reason, where no Chromium or chromedriver is installed (scripts/install.sh
--test installs Debian's chromium and chromium-driver when it can)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tts.results import digest, read_records
from tts.view import write
from tts.view.explain import why_chosen

pytestmark = pytest.mark.timeout(900)


def _browser_paths() -> tuple[str, str]:
    binary = os.environ.get("TTS_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = os.environ.get("TTS_CHROMEDRIVER") or shutil.which("chromedriver")
    return binary, driver


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    binary, driver = _browser_paths()
    if not binary or not driver:
        pytest.skip("no headless Chromium here: install Debian's chromium and chromium-driver "
                    "(scripts/install.sh --test does when apt-get can)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    # the page needs no network; these keep Chromium from trying to reach any (refused here, and slow)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1500,1100"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(options=options, service=Service(driver))
    yield drv
    drv.quit()


def open_page(browser, path: Path, problem: int | None = None):
    # From a blank page every open is a full load that reads its hash; going from one hash of the same
    # page to another would not reload it, and a refresh after that can race the hash navigation.
    browser.get("about:blank")
    browser.get(path.resolve().as_uri() + ("" if problem is None else f"#p{problem}"))
    for _ in range(200):
        if browser.execute_script("return document.body && document.body.dataset.ready === '1'"):
            return
        time.sleep(0.05)
    raise AssertionError(f"the page never finished its script; console: {browser.get_log('browser')}")


def console_errors(browser) -> list:
    return [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]


def tts_run(out: Path, *args: str) -> Path:
    done = subprocess.run([sys.executable, "-m", "tts.cli", "run", "--backend", "hf", "--out", str(out), *args],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def embedded_runs(tmp_path_factory, embedded_model_dir):
    """Real runs of the embedded model: majority, best-of-N, beam search, MCTS and budget forcing (with a
    minimum thinking length, so Waits are injected), 3 problems each."""
    out = tmp_path_factory.mktemp("view") / "embedded.jsonl"
    tts_run(out, "--limit", "3", "--n", "4", "--max-depth", "3", "--strategy", "majority,best_of_n,beam_search,mcts")
    # the same file, one more strategy (a thinking minimum would wrap every strategy of a run in forcing)
    return tts_run(out, "--limit", "3", "--min-thinking-tokens", "24", "--max-thinking-tokens", "64",
                   "--strategy", "budget_forcing")


@pytest.fixture(scope="module")
def testbed_runs(tmp_path_factory):
    """Beam search and particle filtering on the testbed (multi-step problems, a verifier): deep trees."""
    out = tmp_path_factory.mktemp("view") / "testbed.jsonl"
    return tts_run(out, "--model", "testbed", "--dataset", "steps4", "--limit", "6", "--n", "8", "--max-tokens", "256",
                   "--strategy", "beam_search,particle_filter", "--verifier", "testbed-verifier", "--aggregation", "min",
                   "--step-delimiter", "\n", "--expansions", "4")


def page_of(tmp_path, *files) -> Path:
    return write(list(files), tmp_path / "page.html")


def tree_nodes(browser):
    from selenium.webdriver.common.by import By

    return browser.find_elements(By.CSS_SELECTOR, "#tree .tree-node")


@pytest.mark.slow
def test_every_record_of_real_runs_opens_with_its_reason_candidates_and_whole_tree(browser, embedded_runs, tmp_path):
    from selenium.webdriver.common.by import By

    records = read_records(embedded_runs)
    assert {r["strategy"] for r in records} == {"majority", "best_of_n", "beam_search", "mcts", "budget_forcing"}
    page = page_of(tmp_path, embedded_runs)
    open_page(browser, page)
    assert console_errors(browser) == []
    assert len(browser.find_elements(By.CSS_SELECTOR, ".run-table tr")) == 1 + 5
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart circle.point")) == 5
    rows = browser.find_elements(By.CSS_SELECTOR, ".prow")
    assert len(rows) == len(records)
    for i, rec in enumerate(records):
        browser.find_element(By.CSS_SELECTOR, f'.prow[data-row="{i}"]').click()
        assert browser.find_element(By.ID, "why").get_property("textContent") == "Why: " + why_chosen(rec)
        shown = browser.find_elements(By.CSS_SELECTOR, "tr.cand")
        assert len(shown) == len(rec["candidates"])
        tree = rec["info"].get("tree")
        assert len(tree_nodes(browser)) == (len(tree["nodes"]) if tree else 0), rec["strategy"]
        if rec["strategy"] == "budget_forcing":
            assert browser.find_elements(By.CSS_SELECTOR, ".seg-thinking"), "thinking is a segment of its own"
            assert browser.find_elements(By.CSS_SELECTOR, ".seg-wait"), "the injected Wait is a segment of its own"
    assert console_errors(browser) == []


@pytest.mark.slow
def test_clicking_a_node_shows_its_step_and_scores_and_nodes_collapse(browser, testbed_runs, tmp_path):
    from selenium.webdriver.common.by import By

    records = read_records(testbed_runs)
    index, rec = max(((i, r) for i, r in enumerate(records) if r["strategy"] == "beam_search"),
                     key=lambda p: len(p[1]["info"]["tree"]["nodes"]))
    nodes = rec["info"]["tree"]["nodes"]
    open_page(browser, page_of(tmp_path, testbed_runs), index)
    drawn = tree_nodes(browser)
    assert len(drawn) == len(nodes) > 10
    chosen_node = rec["info"]["candidate_nodes"][rec["chosen"]]
    on_path = {int(e.get_attribute("data-node")) for e in browser.find_elements(By.CSS_SELECTOR, "#tree .on-path")}
    by_id = {n["id"]: n for n in nodes}
    path, at = set(), chosen_node
    while at is not None:
        path.add(at)
        at = by_id[at]["parent"]
    assert on_path == path
    node = next(n for n in nodes if n["kind"] == "step" and n["depth"] == 2)
    browser.find_element(By.CSS_SELECTOR, f'#tree .tree-node[data-node="{node["id"]}"]').click()
    assert browser.find_element(By.ID, "node-step").get_property("textContent") == node["step"]
    detail = browser.find_element(By.ID, "node-detail").text
    assert f"step score {float(node['score']):.4g}"[:14] in detail.replace("\n", " ")
    # collapsing the root hides every other node; expanding shows them again
    browser.find_element(By.CSS_SELECTOR, '#tree .tree-node[data-node="0"] .toggle').click()
    assert sum(e.is_displayed() for e in tree_nodes(browser)) == 1
    browser.find_element(By.CSS_SELECTOR, '#tree .tree-node[data-node="0"] .toggle').click()
    assert sum(e.is_displayed() for e in tree_nodes(browser)) == len(nodes)
    # particle filtering: nodes carry how many particles resampling put on them
    pf = next(i for i, r in enumerate(records) if r["strategy"] == "particle_filter")
    open_page(browser, page_of(tmp_path, testbed_runs), pf)
    assert "particles" in browser.find_element(By.ID, "tree").text
    assert console_errors(browser) == []


@pytest.mark.slow
def test_filters_and_sorting_change_the_list(browser, testbed_runs, embedded_runs, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    records = [*read_records(testbed_runs), *read_records(embedded_runs)]
    open_page(browser, page_of(tmp_path, testbed_runs, embedded_runs))

    def count():
        return browser.find_element(By.ID, "count").text

    assert count() == f"({len(records)} of {len(records)})"
    Select(browser.find_element(By.ID, "f-outcome")).select_by_value("correct")
    correct = sum(r["correct"] is True for r in records)
    assert count() == f"({correct} of {len(records)})"
    assert all(e.text == "correct" for e in browser.find_elements(By.CSS_SELECTOR, ".prow span:nth-child(4)"))
    Select(browser.find_element(By.ID, "f-outcome")).select_by_value("")
    Select(browser.find_element(By.ID, "f-strategy")).select_by_value("beam_search")
    assert count() == f"({sum(r['strategy'] == 'beam_search' for r in records)} of {len(records)})"
    Select(browser.find_element(By.ID, "f-file")).select_by_value("1")
    assert count() == f"({sum(r['strategy'] == 'beam_search' for r in read_records(embedded_runs))} of {len(records)})"
    Select(browser.find_element(By.ID, "f-file")).select_by_value("")
    Select(browser.find_element(By.ID, "f-strategy")).select_by_value("")
    Select(browser.find_element(By.ID, "sort")).select_by_value("tokens")
    first = browser.find_element(By.CSS_SELECTOR, ".prow").get_attribute("data-row")
    most = max(range(len(records)), key=lambda i: (records[i]["ledger"]["generated_tokens"], -i))
    assert int(first) == most
    assert console_errors(browser) == []


def hostile(rec: dict, i: int) -> dict:
    rec = copy.deepcopy(rec)
    rec["id"] = f"hostile-{i}"
    payload = '<img src=x onerror="window.__pwned=1"></script><script>window.__pwned=1</script>'
    rec["question"] = payload
    for c in rec["candidates"]:
        c["text"] = payload + c["text"]
        c["answer"] = payload
    for n in (rec["info"].get("tree") or {}).get("nodes", []):
        n["step"] = payload
    rec["info"]["votes"] = {payload: 1}
    rec["metadata"] = {"level": payload}
    rec["digest"] = digest(rec)
    return rec


@pytest.mark.slow
def test_hostile_text_stays_text(browser, testbed_runs, tmp_path):
    from selenium.webdriver.common.by import By

    records = [hostile(r, i) for i, r in enumerate(read_records(testbed_runs)[:3])]
    path = tmp_path / "hostile.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    open_page(browser, page_of(tmp_path, path), 0)
    browser.find_element(By.CSS_SELECTOR, "tr.cand").click()
    tree = browser.find_elements(By.CSS_SELECTOR, "#tree .tree-node")
    tree[-1].click()
    assert browser.execute_script("return window.__pwned") is None
    assert browser.find_elements(By.CSS_SELECTOR, "#detail img, #list img") == []
    assert "<img src=x" in browser.find_element(By.ID, "detail").get_property("textContent")
    assert console_errors(browser) == []


@pytest.mark.slow
def test_ten_thousand_problems_show_their_first_screen_within_seconds(browser, embedded_runs, tmp_path):
    """Real records of every strategy, repeated under new ids to 10,000 problems (trees and candidate texts
    included): the page is ready within a few seconds and holds only the rows in sight."""
    from selenium.webdriver.common.by import By

    base = read_records(embedded_runs)
    path = tmp_path / "big.jsonl"
    with open(path, "w") as fh:
        for i in range(10_000):
            rec = dict(base[i % len(base)], id=f"p{i:05d}")
            rec["digest"] = digest(rec)
            fh.write(json.dumps(rec) + "\n")
    page = page_of(tmp_path, path)
    started = time.perf_counter()
    open_page(browser, page)
    seconds = time.perf_counter() - started
    assert seconds < 15, f"first screen after {seconds:.1f} s"
    assert browser.find_element(By.ID, "count").text == "(10,000 of 10,000)"
    assert len(browser.find_elements(By.CSS_SELECTOR, ".prow")) < 100
    browser.execute_script("const l = document.getElementById('list'); l.scrollTop = l.scrollHeight;")
    time.sleep(0.2)
    shown = [e.get_attribute("data-row") for e in browser.find_elements(By.CSS_SELECTOR, ".prow")]
    assert "9999" in shown
    assert console_errors(browser) == []


@pytest.mark.slow
def test_screenshot_of_a_beam_search_tree(browser, testbed_runs, tmp_path):
    """The README's picture of a beam-search tree, taken here: TTS_SCREENSHOT_DIR=docs/images writes it
    there (otherwise into the test's folder)."""
    from selenium.webdriver.common.by import By

    records = read_records(testbed_runs)
    index = max((i for i, r in enumerate(records) if r["strategy"] == "beam_search" and r["correct"]),
                key=lambda i: len(records[i]["info"]["tree"]["nodes"]))
    open_page(browser, page_of(tmp_path, testbed_runs), index)
    nodes = records[index]["info"]["tree"]["nodes"]
    deep = max((n for n in nodes if n["kind"] == "step"), key=lambda n: (n["depth"], n["id"] in records[index]["info"]["candidate_nodes"]))
    browser.find_element(By.CSS_SELECTOR, f'#tree .tree-node[data-node="{deep["id"]}"]').click()
    browser.execute_script("document.getElementById('problem-title').scrollIntoView()")
    out = Path(os.environ.get("TTS_SCREENSHOT_DIR") or tmp_path) / "view-beam-tree.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    assert browser.find_element(By.ID, "detail-pane").screenshot(str(out))
    assert out.stat().st_size > 10_000
