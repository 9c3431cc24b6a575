"""A classroom measured at the server: N sessions speak Streamlit's own websocket protocol to one ``streamlit run app.py``.

``tests/load.py`` drives real Chromium tabs, but on a 2-core machine twenty browsers rendering plotly starve the
server they share the cores with, so its latencies measure the browsers as much as the app. This driver is what a
classroom of students' *own* laptops looks like to the server: each session is a websocket that sends the same
``BackMsg`` a browser sends (a rerun with the page, the query string the app last wrote and the widget values the
student changed) and reads every ``ForwardMsg`` until the script has finished. The time from sending an interaction to
receiving its last delta is the time until the updated figure has reached the student's browser (drawing it there is
the browser's, and is not counted).

Each student changes the text, switches pages, picks another layer or head and steps a generation; session 0 also
runs 60-token generations, the longest thing a page does. With ``--think S`` a student looks at each result for S
seconds on average (uniformly 0.5 S to 1.5 S) before the next interaction, as students do; without it every session
fires its next interaction the moment the last one finished, which saturates the server. It records exceptions the app sends, any session receiving
another session's text, outbound connections the server opens and its resident memory after the first session and at
the end.

    python tests/protocol_load.py --sessions 20 --seconds 120 --think 5    # a classroom (README figures)
    python tests/protocol_load.py --sessions 20 --seconds 120              # the same, saturated
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import FINETUNE_QUERY, PAGES, WORDS, Stats, measure  # noqa: E402

EARLY_FOR_RERUN = 2  # ScriptFinishedStatus: the app asked for another run; keep reading


class Session:
    """One student's websocket: the page, the query string the app wrote last, and the widgets of the last run."""

    def __init__(self, ws, marker: str, markers: list[str], stats: Stats, name: str):
        self.ws, self.marker, self.markers, self.stats, self.name = ws, marker, markers, stats, name
        self.page, self.query = "", ""
        self.widgets: dict[str, tuple[str, object]] = {}  # label -> (element type, element proto)
        self.figures: list[tuple[str, object]] = []  # (element type, proto) of the figures that report clicks

    async def run(self, page: str | None = None, query: str | None = None, states=()) -> float:
        """Send one rerun and read until it has finished; return the seconds it took."""
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        if page is not None:
            self.page, self.query = page, ""
        msg = BackMsg()
        msg.rerun_script.page_name = self.page
        msg.rerun_script.query_string = self.query if query is None else query
        for state in states:
            msg.rerun_script.widget_states.widgets.append(state)
        t0 = time.perf_counter()
        await self.ws.send(msg.SerializeToString())
        widgets, figures = {}, []
        while True:
            raw = await self.ws.recv()
            for other in self.markers:
                if other != self.marker and other.encode() in raw:
                    self.stats.leaks.append(f"{self.name} received {other}")
            fwd = ForwardMsg()
            fwd.ParseFromString(raw)
            kind = fwd.WhichOneof("type")
            if kind == "page_info_changed":
                self.query = fwd.page_info_changed.query_string
            elif kind == "delta" and fwd.delta.WhichOneof("type") == "new_element":
                element = fwd.delta.new_element
                etype = element.WhichOneof("type")
                if etype == "exception":
                    self.stats.errors.append(f"{self.name} on {self.page or 'home'}: {element.exception.message[:300]}")
                proto = getattr(element, etype)
                if getattr(proto, "id", "") and getattr(proto, "label", ""):
                    widgets[proto.label] = (etype, proto)
                elif etype == "plotly_chart" and proto.id:  # a figure that reports clicks
                    figures.append((etype, proto))
            elif kind == "script_finished" and fwd.script_finished != EARLY_FOR_RERUN:
                self.widgets, self.figures = widgets, figures
                return time.perf_counter() - t0

    def find(self, etype: str, starts: str):
        return next((p for label, (t, p) in self.widgets.items() if t == etype and label.startswith(starts)), None)


def _state(proto, **value):
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    state = WidgetState(id=proto.id)
    for field, v in value.items():
        setattr(state, field, v)
    return state


async def student(i: int, url: str, deadline: float, stats: Stats, markers: list[str], long_generation: bool,
                  think: float = 0.0, finetune: bool = False) -> None:
    """One student; between interactions they look at the result for ``think`` seconds on average (0: never)."""
    from websockets.asyncio.client import connect

    rng = random.Random(i)
    async with connect(url.replace("http", "ws") + "/_stcore/stream", max_size=None, ping_interval=None) as ws:
        s = Session(ws, markers[i], markers, stats, f"session {i}")
        if finetune:
            return await finetuner(s, deadline, stats, think)
        await s.run(page="attention")
        n = 0
        while time.time() < deadline:
            if think and n:
                await asyncio.sleep(min(rng.uniform(0.5, 1.5) * think, max(0.0, deadline - time.time())))
            n += 1
            action = "long" if long_generation and n % 3 == 1 else rng.choice(["text", "text", "page", "select", "generate"])
            try:
                if action == "text" and (box := s.find("text_area", "")) is not None:
                    text = f"{s.marker} " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40)))
                    took = await s.run(states=[_state(box, string_value=text)])
                elif action == "select" and (box := s.find("selectbox", rng.choice(["Layer", "Head"]))) is not None:
                    took = await s.run(states=[_state(box, string_value=rng.choice(box.options))])
                elif action in ("generate", "long"):
                    if s.page != "generation":
                        await s.run(page="generation", query="n=60" if action == "long" else "")
                    button = s.find("button", "Run to" if action == "long" else "Next token")
                    if button is None or button.disabled:  # the generation reached its end: start over
                        button = s.find("button", "Start over")
                    took = await s.run(states=[_state(button, trigger_value=True)])
                else:
                    action = "page"
                    took = await s.run(page=rng.choice(PAGES))
                stats.record(f"{action} ({s.page or 'home'})" if action in ("page", "text") else action, took)
            except Exception as err:  # a closed socket or a missing widget is an error of the run, not a crash of the driver
                stats.errors.append(f"session {i} during {action}: {type(err).__name__}: {str(err)[:200]}")
                return


async def finetuner(s: Session, deadline: float, stats: Stats, think: float) -> None:
    """A student who fine-tunes BERT again and again: Start, then a look at the page every few seconds (as the page's
    own live part reruns) until the results are there; a job may first wait in the server's queue."""
    await s.run(page="finetune", query=FINETUNE_QUERY)
    while time.time() < deadline:
        start = s.find("button", "▶️ Start")
        if start is None or start.disabled:
            stats.errors.append(f"{s.name}: the Fine-tuning page offers no Start button")
            return
        t0 = time.perf_counter()
        stats.record("finetune start", await s.run(states=[_state(start, trigger_value=True)]))
        while time.time() < deadline:
            await asyncio.sleep(max(2.0, think))  # a look at the curves; the page redraws its live part every 2 s
            stats.record("finetune poll", await s.run())
            if s.find("download_button", "⬇️ Download") is not None:  # the results are drawn
                stats.jobs.append(time.perf_counter() - t0)
                await asyncio.sleep(think)
                break


async def classroom(sessions: int, seconds: float, port: int | None = None, long_generation: bool = True,
                    think: float = 0.0, finetuners: int = 0) -> dict:
    out = await measure(sessions, seconds, functools.partial(student, think=think), port, long_generation, finetuners)
    return {**out, "think_s": think}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--think", type=float, default=0.0,
                    help="mean seconds a student looks at a result before the next interaction (0: at once)")
    ap.add_argument("--no-long", action="store_true", help="no session runs 60-token generations")
    ap.add_argument("--finetuners", type=int, default=0, help="sessions that fine-tune BERT throughout (1 to N)")
    args = ap.parse_args()
    print(json.dumps(asyncio.run(classroom(args.sessions, args.seconds, long_generation=not args.no_long, think=args.think,
                                           finetuners=args.finetuners)), indent=2))


if __name__ == "__main__":
    main()
