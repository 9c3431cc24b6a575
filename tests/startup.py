"""Seconds from ``streamlit run app.py`` until the Home page is usable in a browser (its figures drawn).

    python tests/startup.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser import CHROMIUM, FLAGS, free_port, start_app  # noqa: E402


def once(browser) -> float:
    t0 = time.perf_counter()
    port = free_port()
    proc = start_app(port)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function("() => document.querySelector('[data-testid=stApp]')?.getAttribute('data-test-script-state') === 'notRunning'"
                               " && document.querySelectorAll('.js-plotly-plot .main-svg').length > 0", timeout=120_000)
        seconds = time.perf_counter() - t0
        page.close()
        return seconds
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> None:
    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        times = [once(browser) for _ in range(args.repeats)]
        browser.close()
    print(f"start-up to a usable Home page: median {statistics.median(times):.1f} s, "
          f"min {min(times):.1f} s, max {max(times):.1f} s over {len(times)} starts")


if __name__ == "__main__":
    main()
