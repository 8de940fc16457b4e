"""A real browser: notebook 00 in JupyterLab (run all, move the ScoreExplorer slider) and its site page.

Debian's ``chromium`` and ``chromium-driver`` drive the pages through Selenium (``.ci/run``
installs them). Without them every test here is skipped, saying which program is missing.
Screenshots go to ``test-artifacts/browser/`` (git-ignored): look at them after a run.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


pytestmark = pytest.mark.browser

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO_ROOT / "notebooks" / "00_anomaly_detection_basics.ipynb"
ARTIFACTS = REPO_ROOT / "test-artifacts" / "browser"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
LAB_START_TIMEOUT_S = 90
RUN_ALL_TIMEOUT_S = 240


def _chromium_and_driver() -> tuple[str, str]:
    """Paths of the Chromium binary and its chromedriver, or skip with what is missing."""
    browser = next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    missing = [what for what, path in (("chromium", browser), ("chromedriver", driver)) if not path]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not found: install Debian's `chromium chromium-driver` "
                    "(apt-get install -y chromium chromium-driver; .ci/run does it)")
    return browser, driver


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium driven by Selenium (the system chromedriver; nothing is downloaded)."""
    chromium, chromedriver = _chromium_and_driver()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", "--hide-scrollbars"):
        options.add_argument(argument)
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager: never look for a driver online
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory):
    """JupyterLab on a free 127.0.0.1 port with a random token, serving a copy of notebook 00.

    A copy, so that JupyterLab's autosave never writes outputs into the committed notebook.
    The kernel inherits fast mode and the temporary data / cache folders of the root
    conftest. Yields ``(base_url, token)``; the server is stopped afterwards, always.
    """
    root = tmp_path_factory.mktemp("lab")
    (root / "work").mkdir()
    shutil.copy(NOTEBOOK, root / "work" / NOTEBOOK.name)
    # no "get notified about Jupyter news?" pop-up over the screenshots (and no request for news)
    notification = root / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text('{"fetchNews": "false"}')
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "COURSE_FAST": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])),
           "JUPYTER_CONFIG_DIR": str(root / "config"), "JUPYTERLAB_SETTINGS_DIR": str(root / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(root / "workspaces"), "JUPYTER_RUNTIME_DIR": str(root / "runtime")}
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={root / 'work'}", "--LabApp.extension_manager=readonly",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # CI and containers run as root; the server still listens on 127.0.0.1 only
    log = (root / "lab.log").open("w")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + LAB_START_TIMEOUT_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"JupyterLab exited with {server.returncode}:\n{(root / 'lab.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base_url}/api/status?token={token}", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer within {LAB_START_TIMEOUT_S} s:\n"
                            f"{(root / 'lab.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield base_url, token
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def _screenshot(driver, name: str) -> Path:
    """Save a screenshot of the whole page (the window is stretched to its height)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return Math.min(document.documentElement.scrollHeight, 12000)")
    driver.set_window_size(1400, max(1000, int(height)))
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    driver.set_window_size(1400, 1000)
    return path


def _wait(condition, timeout: float, what: str, driver=None):
    """Poll ``condition()`` until it is truthy; fail (with a screenshot) after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            if driver is not None:
                _screenshot(driver, "timeout.png")
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (see {ARTIFACTS / 'timeout.png'})")
        time.sleep(0.5)


_ERROR_LINE = re.compile(r"^\w*(Error|Exception)\b.*", re.M)  # how an uncaught exception's last line looks
_METRICS = re.compile(r"threshold = (?P<threshold>\S+).*?F1 = (?P<f1>\S+) +ACC = (?P<acc>\S+) +SEN = (?P<sen>\S+)"
                      r" +SPE = (?P<spe>\S+)", re.S)


def test_notebook_00_runs_in_jupyterlab_and_the_score_explorer_slider_works(fast_site, browser, jupyterlab):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    base_url, token = jupyterlab
    browser.get(f"{base_url}/lab/tree/{NOTEBOOK.name}?token={token}&reset")
    _wait(lambda: browser.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell"), 60, "the notebook", browser)
    _wait(lambda: browser.execute_script(
        "const s = document.querySelector('.jp-Notebook-ExecutionIndicator');"
        "return s && s.getAttribute('data-status') === 'idle';"), 90, "an idle kernel", browser)

    # Run > Run All Cells, as a student would.
    run_menu = next(item for item in browser.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item")
                    if item.text.strip() == "Run")
    run_menu.click()
    _wait(lambda: [item for item in browser.find_elements(By.CSS_SELECTOR, ".lm-Menu-item")
                   if item.text.strip().startswith("Run All Cells")], 10, "Run > Run All Cells", browser)[0].click()

    def all_cells_ran() -> bool:
        prompts = [p.get_attribute("textContent").strip()
                   for p in browser.find_elements(By.CSS_SELECTOR, ".jp-CodeCell .jp-InputPrompt")]
        return bool(prompts) and all(re.fullmatch(r"\[\d+\]:", p) for p in prompts)

    _wait(all_cells_ran, RUN_ALL_TIMEOUT_S, "every cell to run ([n]: prompts)", browser)

    outputs = browser.execute_script(
        "return [...document.querySelectorAll('.jp-OutputArea-output')].map(o => o.innerText)")
    errors = [text[:300] for text in outputs if "Traceback" in text or _ERROR_LINE.search(text)]
    assert not errors, f"cell outputs with errors: {errors[:3]}"
    plain_widgets = [text[:80] for text in outputs if text.lstrip().startswith(("VBox(", "HBox("))]
    assert not plain_widgets, f"widgets shown as text (no widget manager in the page): {plain_widgets}"

    # The ScoreExplorer: the one slider whose description is "threshold".
    sliders = [s for s in browser.find_elements(By.CSS_SELECTOR, ".widget-slider, .jupyter-widget-slider")
               if "threshold" in s.text]
    assert len(sliders) == 1, f"expected one threshold slider, found {len(sliders)}"
    slider = sliders[0]
    explorer = slider.find_element(By.XPATH, "./ancestor::div[contains(@class, 'widget-vbox')][1]")
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", explorer)
    readout = slider.find_element(By.CSS_SELECTOR, ".widget-readout")
    metrics = explorer.find_element(By.CSS_SELECTOR, ".widget-html-content")

    def shown() -> tuple[str, str, tuple[str, ...]]:
        # the figures' sources in one script call: an image found first and read after would be
        # stale once the widget redraws it in between (seen on a loaded machine)
        sources = browser.execute_script("return [...arguments[0].querySelectorAll('img')].map(i => i.src)",
                                         explorer)
        return readout.text.strip(), metrics.text, tuple(hashlib.sha1(src.encode()).hexdigest() for src in sources)

    before = shown()
    assert _METRICS.search(before[1]), f"metrics line not found in {before[1]!r}"
    assert before[2], "the explorer shows no figure"
    _screenshot(browser, "lab-00-before-slider.png")

    handle = slider.find_element(By.CSS_SELECTOR, ".noUi-handle")
    track = slider.find_element(By.CSS_SELECTOR, ".noUi-target, .slider")
    ActionChains(browser).click_and_hold(handle).move_by_offset(int(track.size["width"] * 0.3), 0).release().perform()
    # the metrics line changes first, the figures are redrawn after it
    after = _wait(lambda: (now := shown())[1] != before[1] and now[2] != before[2] and now, 60,
                  "the metrics and the figure to change after moving the slider", browser)
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", explorer)
    _screenshot(browser, "lab-00-after-slider.png")

    old, new = _METRICS.search(before[1]), _METRICS.search(after[1])
    assert after[0] != before[0], "the slider's readout did not change"
    assert new["threshold"] == after[0], f"metrics threshold {new['threshold']} != slider readout {after[0]}"
    assert float(new["threshold"]) > float(old["threshold"]), "moving the handle right must raise the threshold"
    assert (new["sen"], new["spe"]) != (old["sen"], old["spe"]), "SEN / SPE did not change with the threshold"
    assert after[2] != before[2], "the explorer's figure was not redrawn"

    # The same notebook on the built site: its figures and tables are there.
    page = fast_site / "notebooks" / f"{NOTEBOOK.stem}.html"
    browser.get(page.as_uri())
    images = _wait(lambda: [img for img in browser.find_elements(By.CSS_SELECTOR, "article img")
                            if browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img)],
                   30, "the site page's figures", browser)
    tables = browser.find_elements(By.CSS_SELECTOR, "article table")
    banner = browser.find_element(By.CSS_SELECTOR, ".bd-header-announcement").text
    _screenshot(browser, "site-00.png")
    assert len(images) >= 5, f"the site page shows {len(images)} figures"
    assert len(tables) >= 2, f"the site page shows {len(tables)} tables"
    assert "bundled sample" in banner
    assert "open in Colab" in browser.find_element(By.CSS_SELECTOR, "article").text
    assert not [o.text for o in browser.find_elements(By.CSS_SELECTOR, "article .output")
                if o.text.lstrip().startswith(("VBox(", "HBox("))], "a widget is shown as text on the site"
