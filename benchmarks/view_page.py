"""How fast `tts view` writes and a browser opens a page of many problems.

Real records (a results file of yours, or a fresh testbed run of beam search, particle filtering and
majority voting, trees and candidate texts included) are repeated under new ids up to --problems; then:
the seconds `tts view` takes to write the page and its size, and in headless Chromium the seconds until
the page's script is done (its first screen: run tables, chart, the first rows of the list), the seconds
to open the problem with the largest tree, and the rows in the page (the list draws only those in sight).

    .venv/bin/python benchmarks/view_page.py --problems 10000
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def testbed_records(folder: Path) -> Path:
    out = folder / "testbed.jsonl"
    subprocess.run([sys.executable, "-m", "tts.cli", "run", "--backend", "hf", "--model", "testbed", "--dataset", "steps4",
                    "--limit", "20", "--n", "8", "--max-tokens", "256", "--strategy", "beam_search,particle_filter,majority",
                    "--verifier", "testbed-verifier", "--aggregation", "min", "--step-delimiter", "\n", "--expansions", "4",
                    "--out", str(out)], check=True, capture_output=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=10_000, help="records in the page")
    ap.add_argument("--results", default=None, help="a results file whose records are repeated (default: a testbed run)")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    ap.add_argument("--chromedriver", default=shutil.which("chromedriver") or "chromedriver")
    args = ap.parse_args()

    from tts.results import digest, read_records
    from tts.view import write

    folder = Path(tempfile.mkdtemp(prefix="tts-view-bench-"))
    source = Path(args.results) if args.results else testbed_records(folder)
    base = read_records(source)
    big = folder / "big.jsonl"
    with open(big, "w") as fh:
        for i in range(args.problems):
            rec = dict(base[i % len(base)], id=f"p{i:06d}")
            rec["digest"] = digest(rec)
            fh.write(json.dumps(rec) + "\n")
    started = time.perf_counter()
    page = write([big], folder / "page.html")
    write_s = time.perf_counter() - started
    size_mb = page.stat().st_size / 1e6

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = args.chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1500,1100"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(args.chromedriver))
    try:
        started = time.perf_counter()
        driver.get(page.resolve().as_uri())
        while not driver.execute_script("return document.body && document.body.dataset.ready === '1'"):
            time.sleep(0.02)
        ready_s = time.perf_counter() - started
        rows = len(driver.find_elements(By.CSS_SELECTOR, ".prow"))
        largest = max(range(len(base)), key=lambda i: len((base[i]["info"].get("tree") or {}).get("nodes", [])))
        nodes = len((base[largest]["info"].get("tree") or {}).get("nodes", []))
        driver.execute_script(f"const l = document.getElementById('list'); l.scrollTop = {largest} * 26;"
                              "l.dispatchEvent(new Event('scroll'));")
        started = time.perf_counter()  # the click draws the problem before it returns
        driver.execute_script(f"document.querySelector('.prow[data-row=\"{largest}\"]').click()")
        drawn = len(driver.find_elements(By.CSS_SELECTOR, "#tree .tree-node"))
        open_s = time.perf_counter() - started
    finally:
        driver.quit()
    print(f"problems {args.problems:,} (from {len(base)} real records of {source.name})")
    print(f"tts view writes the page: {write_s:.1f} s, {size_mb:.1f} MB")
    print(f"Chromium: first screen ready {ready_s:.2f} s; {rows} list rows in the page")
    print(f"opening the largest tree ({nodes} nodes, {drawn} drawn): {open_s:.2f} s")
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
