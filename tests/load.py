"""A classroom on one server: N students' browser tabs against one ``streamlit run app.py``.

Each session is a real headless Chromium tab (Playwright) doing what a student does: typing a new
text, switching pages, moving a slider, stepping a generation. For every interaction it measures the
time from the action until Streamlit has finished the rerun it caused (the app's
``data-test-script-state`` goes to ``notRunning``), so the figure on screen is the updated one.

It records exceptions shown on the page, browser dialogs (a script that ran), requests that leave
localhost, outbound connections the server opens, the server's resident memory after the first
session and at the end, and whether any session ever sees another session's text.

    python tests/load.py --sessions 20 --seconds 120      # the full run (README figures)
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from playwright.async_api import TimeoutError as PlaywrightTimeout

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser import CHROMIUM, FLAGS, foreign_connections, free_port, resident_mb, start_app  # noqa: E402

PAGES = ["", "tokenization", "masking", "attention", "masks", "generation", "compare", "layers", "finetune"]
FINETUNE_QUERY = "model=bert&task=verse&n=256"  # a fine-tuning student's run: 16 steps of BERT, then its results
WORDS = "love time king night death heaven lord honour sweet fair blood crown sleep dream heart".split()


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    actions: dict[str, list[float]] = field(default_factory=dict)  # what the student did -> its latencies
    jobs: list[float] = field(default_factory=list)  # fine-tuning runs: seconds from Start to the results shown

    def record(self, action: str, seconds: float) -> None:
        self.latencies.append(seconds)
        self.actions.setdefault(action, []).append(seconds)

    def summary(self) -> dict:
        others = [t for a, v in self.actions.items() if not a.startswith("finetune") for t in v]
        return {**_figures(self.latencies), "errors": len(self.errors), "dialogs": len(self.dialogs),
                "foreign_requests": len(self.foreign), "leaks": len(self.leaks),
                "actions": {a: _figures(v) for a, v in sorted(self.actions.items())},
                "not_finetuning": _figures(others), "finetune_jobs": _figures(self.jobs)}


def _figures(latencies: list[float]) -> dict:
    lat = sorted(latencies)
    if not lat:
        return {"interactions": 0}
    return {"interactions": len(lat), "median_s": round(statistics.median(lat), 3),
            "p95_s": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 3), "max_s": round(lat[-1], 3)}


async def settled(page, timeout: float = 90.0) -> None:
    """Wait for the rerun an action started (if it starts within 0.4 s) to finish."""
    state = "[data-testid='stApp']"
    try:
        await page.wait_for_function(f"() => document.querySelector(\"{state}\")?.getAttribute('data-test-script-state') === 'running'",
                                     timeout=400)
    except Exception:
        pass
    await page.wait_for_function(f"() => document.querySelector(\"{state}\")?.getAttribute('data-test-script-state') !== 'running'",
                                 timeout=timeout * 1000)


async def student(i: int, url: str, deadline: float, stats: Stats, markers: list[str], long_generation: bool, browser,
                  finetune: bool = False) -> None:
    rng = random.Random(i)
    ctx = await browser.new_context(viewport={"width": 1400, "height": 900})
    page = await ctx.new_page()
    page.on("request", lambda r: stats.foreign.append(r.url) if urlparse(r.url).hostname not in ("127.0.0.1", "localhost", None) else None)
    page.on("dialog", lambda d: (stats.dialogs.append(d.message), asyncio.ensure_future(d.dismiss())))
    marker = markers[i]
    if finetune:
        await finetuner(i, page, url, deadline, stats)
        await ctx.close()
        return
    await page.goto(f"{url}/attention")
    await settled(page)
    n = 0
    while time.time() < deadline:
        n += 1
        action = "long" if long_generation and n % 3 == 1 else rng.choice(["text", "text", "page", "slider", "generate"])
        t0 = time.perf_counter()
        try:
            if action == "text":
                box = page.locator("textarea:visible").first
                if await box.count() == 0:
                    action = "page"
                else:
                    typed = f"{marker} " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40)))
                    try:
                        await box.fill(typed, timeout=10_000)
                    except PlaywrightTimeout:  # a box of the page being replaced (a rerun that began late): as a
                        await settled(page)     # student would, wait for the page and type into the box it shows
                        box = page.locator("textarea:visible").first
                        await box.fill(typed, timeout=30_000)
                    t0 = time.perf_counter()
                    await box.press("Control+Enter")
            if action == "page":
                await page.locator("[data-testid='stSidebar'] a").nth(rng.randrange(len(PAGES))).click()
            elif action == "slider":
                slider = page.locator("[role='slider']")
                if await slider.count():
                    await slider.first.focus()
                    await slider.first.press(rng.choice(["ArrowRight", "ArrowLeft"]))
                else:
                    action = "none"
            elif action in ("generate", "long"):
                if "generation" not in page.url:
                    await page.goto(f"{url}/generation" + ("?n=60" if action == "long" else ""))
                    await settled(page)
                    t0 = time.perf_counter()
                button = page.get_by_role("button", name="Next token")
                if action == "long":
                    button = page.get_by_role("button", name="Run to N")
                if await button.count() and await button.first.is_enabled():
                    await button.first.click()
                else:  # the generation reached its end: start over, as a student would
                    restart = page.get_by_role("button", name="Start over")
                    if await restart.count() and await restart.first.is_enabled():
                        await restart.first.click()
                    else:
                        action = "none"
            await settled(page)
            if action != "none":
                stats.record(action, time.perf_counter() - t0)
            for e in await page.locator("[data-testid='stException']").all_inner_texts():
                stats.errors.append(f"session {i} after {action}: {e[:300]}")
            body = await page.locator("body").inner_text()
            for other in markers:
                if other != marker and other in body:
                    stats.leaks.append(f"session {i} saw {other}")
        except Exception as err:  # a timeout or a vanished element is an error of the run, not a crash of the test
            stats.errors.append(f"session {i} during {action}: {type(err).__name__}: {str(err)[:200]}")
    await ctx.close()


async def finetuner(i: int, page, url: str, deadline: float, stats: Stats) -> None:
    """A student who fine-tunes BERT again and again, waiting in line when the queue is full, and looks at the results."""
    await page.goto(f"{url}/finetune?{FINETUNE_QUERY}")
    await settled(page)
    while time.time() < deadline:
        try:
            t0 = time.perf_counter()
            await page.get_by_role("button", name="Start fine-tuning").click()
            await settled(page)
            stats.record("finetune start", time.perf_counter() - t0)
            await page.get_by_text("Take it with you").wait_for(timeout=max(1000, (deadline - time.time()) * 1000))
            stats.jobs.append(time.perf_counter() - t0)
            for e in await page.locator("[data-testid='stException']").all_inner_texts():
                stats.errors.append(f"session {i} fine-tuning: {e[:300]}")
        except Exception as err:
            if time.time() < deadline - 1:
                stats.errors.append(f"session {i} fine-tuning: {type(err).__name__}: {str(err)[:200]}")
            return


async def measure(sessions: int, seconds: float, student, port: int | None = None, long_generation: bool = True,
                  finetuners: int = 0) -> dict:
    """Start the app, let ``student(i, url, deadline, stats, markers, long_generation)`` run for every session at once
    (after one short session that loads the models) and sum up what they saw and what the server did. Sessions 1 to
    ``finetuners`` fine-tune a model instead (``student(..., finetune=True)``); ``not_finetuning`` is the others' figures."""
    port = port or free_port()
    proc = start_app(port)
    url = f"http://127.0.0.1:{port}"
    stats = Stats()
    markers = [f"zq{i}marker{random.randrange(10**6)}" for i in range(sessions)]
    conns: list[str] = []
    try:
        await student(0, url, time.time() + 5, Stats(), markers, False)  # loads the models
        rss_first = resident_mb(proc.pid)
        deadline = time.time() + seconds

        async def watch():
            while time.time() < deadline:
                conns.extend(foreign_connections(proc.pid))
                await asyncio.sleep(0.5)

        await asyncio.gather(watch(), *(student(i, url, deadline, stats, markers, long_generation and i == 0,
                                                finetune=1 <= i <= finetuners) for i in range(sessions)))
        rss_end = resident_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    out = stats.summary()
    out.update(sessions=sessions, seconds=seconds, rss_first_mb=round(rss_first), rss_end_mb=round(rss_end),
               rss_ratio=round(rss_end / rss_first, 2), server_foreign_connections=sorted(set(conns)),
               first_errors=stats.errors[:5], first_leaks=stats.leaks[:5])
    return out


async def classroom(sessions: int, seconds: float, port: int | None = None, long_generation: bool = True,
                    finetuners: int = 0) -> dict:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            return await measure(sessions, seconds, functools.partial(student, browser=browser), port, long_generation,
                                 finetuners)
        finally:
            await browser.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--finetuners", type=int, default=0, help="sessions that fine-tune BERT throughout")
    args = ap.parse_args()
    print(json.dumps(asyncio.run(classroom(args.sessions, args.seconds, finetuners=args.finetuners)), indent=2))


if __name__ == "__main__":
    main()
