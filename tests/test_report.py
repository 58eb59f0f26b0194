"""`model-collapse report`: one self-contained HTML page per run, checked in a real headless Chromium
(Debian's chromium and chromium-driver, which .ci/run installs) as a reader would open it."""

import html
import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import invoke, tiny_vae, write_config
from model_collapse.config import load_experiment
from model_collapse.outcome import run_spec
from model_collapse.rundir import create_run
from model_collapse.settings import SETTINGS

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def run(out: Path, config: Path | str, *overrides: str) -> Path:
    result = invoke("run", config, *overrides, "--out", out, "-q")
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1600"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # every request the page makes
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def open_in(browser, page: Path) -> dict:
    """Load ``page`` and return what a reader would meet: images, requests, a screenshot."""
    import json

    browser.get_log("performance")  # forget earlier pages' requests
    browser.get(page.resolve().as_uri())
    images = browser.execute_script(
        "return [...document.images].map(i => ({complete: i.complete, width: i.naturalWidth, alt: i.alt}))"
    )
    requests = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            requests.append(message["params"]["request"]["url"])
    return {
        "images": images,
        "requests": requests,
        "screenshot": browser.get_screenshot_as_png(),
        "text": browser.find_element("tag name", "body").text,
    }


def assert_renders(seen: dict, page: Path, figures: int) -> None:
    from PIL import Image

    assert len(seen["images"]) == figures
    assert all(i["complete"] and i["width"] > 100 for i in seen["images"]), seen["images"]
    leaving = [url for url in seen["requests"] if not url.startswith(("data:", page.resolve().as_uri()))]
    assert not leaving, f"the page fetched {leaving}"
    shot = np.asarray(Image.open(io.BytesIO(seen["screenshot"])).convert("L"))
    assert (shot < 200).mean() > 0.02, "the page looks blank"


@pytest.mark.slow
def test_report_of_a_swept_run_renders_in_chromium_with_every_figure(tmp_path, browser):
    out = run(
        tmp_path / "gauss", ROOT / "configs" / "gaussian.yaml", "seeds=6", "iterations=4", "sweep.samples=[10,32]"
    )
    result = invoke("report", out)
    assert result.exit_code == 0, result.output
    page = out / "report.html"
    assert result.output.strip() == str(page)
    seen = open_in(browser, page)
    assert_renders(seen, page, figures=2 * 5 + 1)  # two per metric, and the real fraction's
    text = seen["text"]
    assert "Complete: all 6 chains ran 4 iterations." in text
    assert "T = 10" in text and "T = 32" in text
    assert "+inf for 6 of 6 seeds at every iteration" in text  # T = 10 = d: the NLL of a singular fit
    assert "replace: theory (expected)" in text
    assert "mean of 6 seeds, 95% CI (Student t)" in text
    assert "tool_commit" not in text and "numpy" in text  # the environment the run recorded


@pytest.mark.slow
def test_report_of_an_image_run_shows_its_sample_grids(tmp_path, browser):
    config = write_config(
        tmp_path / "vae.yaml",
        {"setting": tiny_vae(), "regimes": ["replace", "accumulate"], "iterations": 2, "seeds": 1},
    )
    out = run(tmp_path / "vae", config)
    page = tmp_path / "elsewhere.html"
    assert invoke("report", out, "--out", page).exit_code == 0
    assert not (out / "report.html").exists()  # written where asked, nowhere else
    seen = open_in(browser, page)
    metrics = len(SETTINGS.declared("vae").metrics)  # test loss and its parts, diversity, the image metrics
    assert_renders(seen, page, figures=2 * metrics + 1 + 2)  # and Fig. 6 and the samples by iteration
    assert any(i["alt"] == "samples_base" for i in seen["images"])


def test_a_stopped_run_gets_a_report_of_what_is_committed_marked_as_such(tmp_path):
    experiment = load_experiment(ROOT / "configs" / "quickstart.yaml", ["seeds=5", "iterations=6"])
    create_run(tmp_path / "run", experiment.resolved()).release()
    run_spec(tmp_path / "run", experiment.chains()[0], 2, "last")  # replace stopped after 2 of 6
    assert invoke("report", tmp_path / "run").exit_code == 0
    page = (tmp_path / "run" / "report.html").read_text()
    assert "In progress or stopped:" in page and "3 of 3\nchains have not reached iteration 6" in page
    assert "2 of 6" in page and "0 of 6" in page
    assert "iteration 2</th>" in page and "iteration 6</th>" not in page  # only what is committed


def test_texts_in_a_report_are_escaped(tmp_path, monkeypatch):
    from model_collapse import report

    out = run(tmp_path / "run", ROOT / "configs" / "quickstart.yaml", "seeds=3", "iterations=2")
    story = '<script>alert("x")</script> & <img src=http://example.com/x.png>'
    monkeypatch.setattr(report, "text_samples", lambda experiment, results: {"base": [("real data", [story])]})
    page = report.build_report(out)
    assert html.escape(story).replace("&quot;", "&#34;") in page  # shown as text, never as markup
    assert "<script" not in page and "<img src=http" not in page


def test_bad_report_arguments_get_one_line(tmp_path):
    out = run(tmp_path / "run", ROOT / "configs" / "quickstart.yaml", "seeds=3", "iterations=2")
    for args, message in [
        ((tmp_path / "nothing",), "is not a directory"),
        ((out, "--out", tmp_path), "is a directory; name the HTML file"),
        ((out, "--out", tmp_path / "missing" / "r.html"), "does not exist"),
    ]:
        result = invoke("report", *args)
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_compare_overlays_runs_per_regime_in_one_page(tmp_path, browser):
    small = run(tmp_path / "T100", ROOT / "configs" / "quickstart.yaml", "seeds=8", "iterations=5")
    large = run(
        tmp_path / "T300", ROOT / "configs" / "quickstart.yaml", "seeds=8", "iterations=5", "setting.samples=300"
    )
    out = tmp_path / "comparison"
    result = invoke("compare", small, large, "--out", out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["compare.html", "test_error.png", "test_error.svg"]
    seen = open_in(browser, out / "compare.html")
    assert_renders(seen, out / "compare.html", figures=1)
    text = seen["text"]
    assert "Comparison: T100 vs T300" in text
    for row in ("T100 replace", "T300 replace", "T100 accumulate", "T300 accumulate-subsample"):
        assert row in text

    from model_collapse.compare import _load, comparison_figure

    figure = comparison_figure(_load([small, large], ["d = 10, T = 100", "d = 10, T = 300"]), "test_error", "error")
    panels = [ax for ax in figure.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["replace", "accumulate", "accumulate-subsample"]
    assert [line.get_label() for line in panels[0].lines] == ["d = 10, T = 100", "d = 10, T = 300"]
    replace_100, replace_300 = (line.get_ydata() for line in panels[0].lines)
    assert (replace_300 < replace_100).all()  # more data per fit, less error: the lines are the runs'


def test_compare_refuses_what_it_cannot_overlay_in_one_line(tmp_path):
    lr = run(tmp_path / "lr", ROOT / "configs" / "quickstart.yaml", "seeds=3", "iterations=2")
    gauss = run(tmp_path / "g", ROOT / "configs" / "gaussian_1d.yaml", "seeds=3", "iterations=2")
    (tmp_path / "file").write_text("")
    for args, message in [
        ((lr, "--out", tmp_path / "c"), "at least two run directories"),
        ((lr, lr, "--out", tmp_path / "c"), "would share a label"),
        ((lr, gauss, "--out", tmp_path / "c"), "no metric in common"),
        ((lr, lr, "--label", "a", "--out", tmp_path / "c"), "--label given 1 times for 2 runs"),
        ((lr, lr, "--label", "a", "--label", "b", "--metric", "nll", "--out", tmp_path / "c"), "--metric nll"),
        ((lr, lr, "--label", "a", "--label", "b", "--out", tmp_path / "file"), "is a file"),
    ]:
        result = invoke("compare", *args)
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "c").exists()


def test_the_metric_tables_show_every_iteration_of_a_short_run_and_say_what_a_long_ones_leave_out(tmp_path):
    short = run(tmp_path / "short", ROOT / "configs" / "quickstart.yaml", "seeds=3", "iterations=6")
    page = Path(invoke("report", short).stdout.strip()).read_text()
    assert re.findall(r"<th>iteration (\d+)</th>", page)[:6] == ["1", "2", "3", "4", "5", "6"]
    assert "are shown; the figures show every one" not in page
    long = run(tmp_path / "long", ROOT / "configs" / "quickstart.yaml", "seeds=3", "iterations=20")
    page = Path(invoke("report", long).stdout.strip()).read_text()
    assert re.findall(r"<th>iteration (\d+)</th>", page)[:5] == ["1", "6", "10", "15", "20"]
    assert "Iterations 1, 6, 10, 15, 20 of 1–20 are shown; the figures show every one." in page
