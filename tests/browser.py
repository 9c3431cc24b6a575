"""A real browser against a real ``streamlit run app.py`` on localhost, for the end-to-end tests.

``app_server`` starts the app once per test session on a free port; ``browser_page`` opens a
headless Debian Chromium tab through Playwright and records every request it makes, every
dialog that opens and every console error, so a test can assert that nothing left localhost
and nothing ran.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import urlopen

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("LMVIZ_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run", "--disable-quic", "--disable-sync"]
SHOTS = ROOT / "tests" / "screenshots"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(port: int, extra_args: list[str] | None = None, env: dict | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    if extra_args:
        cmd += ["--", *extra_args]
    SHOTS.mkdir(parents=True, exist_ok=True)
    log = open(SHOTS / f"server-{port}.log", "wb")  # a file, not a pipe: a full pipe would stall the server
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    proc.log_path = SHOTS / f"server-{port}.log"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1).status == 200:
                return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("streamlit did not start within 60 s:\n" + proc.log_path.read_text(errors="replace")[-3000:])


@dataclass
class Recorder:
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def foreign_requests(self) -> list[str]:
        return [u for u in self.requests if urlparse(u).scheme not in ("data", "blob", "about")
                and urlparse(u).hostname not in ("127.0.0.1", "localhost")]


@pytest.fixture(scope="session")
def app_server():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (apt-get install chromium chromium-driver)")
    port = free_port()
    proc = start_app(port)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def chromium():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def browser_page(chromium):
    """A fresh tab (1400×900) and its Recorder."""
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    rec = Recorder()
    page.on("request", lambda r: rec.requests.append(r.url))
    page.on("dialog", lambda d: (rec.dialogs.append(d.message), d.dismiss()))
    page.on("console", lambda m: rec.console_errors.append(m.text) if m.type == "error" else None)
    yield page, rec
    context.close()


def run_async(coro):
    """Run a coroutine to its end in a thread of its own: the browser tests' sync Playwright keeps an event loop on
    the main thread, where ``asyncio.run`` would refuse."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def wait_for_app(page, timeout: float = 60_000) -> None:
    """Wait until Streamlit has finished running the script (no 'running' indicator) and no spinner shows."""
    page.wait_for_selector("[data-testid='stApp']", timeout=timeout)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]') && !document.querySelector('[data-testid=\"stSpinner\"]')",
        timeout=timeout)
    page.wait_for_timeout(300)


def click_in_figure(page, target) -> None:
    """A real mouse click at the middle of ``target`` (a locator inside a plotly figure, whose drag layer covers it),
    where a student would click. A late rerun may replace the figure while we scroll to it: find it afresh."""
    from playwright.sync_api import Error

    for attempt in range(3):
        try:
            target.scroll_into_view_if_needed(timeout=10_000)
            box = target.bounding_box()
            break
        except Error:
            if attempt == 2:
                raise
            wait_for_app(page)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)


def screenshot(page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def error_boxes(page) -> list[str]:
    """Texts of exception boxes Streamlit shows (a traceback would be a bug)."""
    return [e.inner_text() for e in page.query_selector_all("[data-testid='stException']")]


def process_tree(pid: int) -> list[int]:
    """The process and every process it started (the server's fine-tuning workers), alive now."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:  # it ended meanwhile
                pass
    return out


def resident_mb(pid: int) -> float:
    """Resident memory (VmRSS) in MB of the process and the processes it started."""
    total = 0.0
    for p in process_tree(pid):
        try:
            lines = Path(f"/proc/{p}/status").read_text().splitlines()
        except OSError:
            continue
        total += next((int(line.split()[1]) / 1024 for line in lines if line.startswith("VmRSS:")), 0.0)
    return total


def _remote(hex_addr: str) -> tuple[str, int]:
    import ipaddress

    host, port = hex_addr.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        ip = ipaddress.IPv4Address(raw[::-1])
    else:  # /proc/net/tcp6 stores four little-endian 32-bit words
        ip = ipaddress.IPv6Address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
        if ip.ipv4_mapped:
            ip = ip.ipv4_mapped
    return str(ip), int(port, 16)


def foreign_connections(pid: int) -> list[str]:
    """Remote addresses of the TCP/UDP sockets of the process (and those it started) that are neither loopback nor
    unspecified."""
    import ipaddress

    inodes = set()
    for p in process_tree(pid):
        try:
            targets = [os.readlink(fd) for fd in Path(f"/proc/{p}/fd").iterdir()]
        except OSError:  # it ended meanwhile, or a descriptor closed as it was read: the next look sees it
            continue
        inodes |= {t[8:-1] for t in targets if t.startswith("socket:[")}
    found = []
    for table in ("tcp", "tcp6", "udp", "udp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for row in path.read_text().splitlines()[1:]:
            cols = row.split()
            if len(cols) > 9 and cols[9] in inodes:
                ip, port = _remote(cols[2])
                addr = ipaddress.ip_address(ip)
                if not (addr.is_loopback or addr.is_unspecified):
                    found.append(f"{table} {ip}:{port}")
    return found
