"""app.py's process setup: once per server process, and nothing on importing the library or ``ui``."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_importing_ui_changes_no_process_setting():
    code = ("import torch; torch.set_num_threads(2); import lmviz.app.ui, lmviz.app.views; "
            "assert torch.get_num_threads() == 2, torch.get_num_threads()")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_cached_figure_comes_back_as_its_json_and_draws_the_same():
    """st.cache_data pickles a page's figures. A go.Figure unpickled re-validated its whole tree (template included):
    the largest cost of a cached rerun. ui's reducer stores the figure's dict, and Streamlit draws that dict as is."""
    import pickle

    import plotly.io as pio
    from streamlit.testing.v1 import AppTest

    from lmviz.app import ui
    from lmviz.viz.attention import attention_heatmap

    fig = attention_heatmap([[1.0, 0.0], [0.4, 0.6]], ["a", "<b>"], ["a", "<b>"], title="t", mask=[[1, 0], [1, 1]])
    as_json = lambda f: pio.to_json(f.to_dict(), validate=False)  # noqa: E731
    back = pickle.loads(pickle.dumps(fig))
    assert isinstance(back, ui.Drawn) and as_json(back) == as_json(fig)
    assert as_json(pickle.loads(pickle.dumps(back))) == as_json(fig), "and it pickles again (a cache entry re-read)"

    def page(spec):
        from lmviz.app import ui
        ui.plot(ui.Drawn(spec))

    at = AppTest.from_function(page, args=(fig.to_dict(),)).run()
    assert not at.exception
    drawn = at.get("plotly_chart")[0].proto.spec
    assert drawn == as_json(fig)
