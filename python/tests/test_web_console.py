"""The web console in a real headless Chromium (Debian's chromium and chromedriver), driven by
selenium, against `secsgate run` of the demo project: the overview shows Communicating, a
message sent from the connection page's form appears in the live stream with its reply within
a second, a handler error appears on the handlers page with its traceback, a tag value
updates, the simulators page starts an event run, and the message log finds what was sent.
A non-loopback bind without credentials refuses to start. Screenshots of every page are kept
in target/web-screenshots/ for a person to look at."""

import pathlib
import shutil
import signal
import subprocess
import tempfile

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from helpers import Lines, free_port, stop

REPO = pathlib.Path(__file__).resolve().parents[2]
DEMO = REPO / "projects" / "demo"
SHOTS = REPO / "target" / "web-screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

# A custom response handler that fails on every event report: its traceback must reach the
# handlers page (the gateway then sends the default S6F12).
BROKEN_HANDLER = '''# Refuses every event report, to show a handler error in the web console.
def check(ceid):
    raise ValueError("lot tracking is down; event report refused")

check(payload["TxID"])
'''


@pytest.fixture
def gateway(secsgate_bin, tmp_path):
    project = tmp_path / "demo"
    shutil.copytree(DEMO, project)
    toml = project / "project.toml"
    toml.write_text(toml.read_text().replace("port = 5000", f"port = {free_port()}"))
    (project / "handlers" / "onEventReport.py").write_text(BROKEN_HANDLER)
    proc = subprocess.Popen(
        [secsgate_bin, "run", str(project), "--web", "127.0.0.1:0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = Lines(proc.stderr)
    try:
        line = lines.wait_for(r"web console at http://127\.0\.0\.1:\d+/")
        url = line[line.index("http://"):].split()[0]
        yield url, lines
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        finally:
            stop(proc)


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="secsgate-chromium-")
    for flag in [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--window-size=1400,1000", f"--user-data-dir={profile}",
    ]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def shot(driver, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def wait(driver, timeout=20):
    return WebDriverWait(
        driver, timeout, poll_frequency=0.05, ignored_exceptions=(StaleElementReferenceException,)
    )


def text_of(driver, css):
    """The text of the first element matching `css` ("" if none). Pages re-render as updates
    come: an element replaced between finding and reading counts as not there yet."""
    try:
        found = driver.find_elements(By.CSS_SELECTOR, css)
        return found[0].text if found else ""
    except StaleElementReferenceException:
        return ""


def click(driver, css):
    """Clicks the element matching `css` once it is there (again, if the page re-rendered it
    between finding and clicking)."""

    def attempt(d):
        try:
            found = d.find_elements(By.CSS_SELECTOR, css)
            if found:
                found[0].click()
                return True
        except StaleElementReferenceException:
            pass
        return False

    wait(driver).until(attempt)


def test_pages_in_chromium(gateway, browser):
    url, log = gateway
    d = browser

    # Overview: the host connection and the simulator reach Communicating, live.
    d.get(url)
    for name in ["Tool1", "Sim1"]:
        wait(d).until(lambda d: text_of(d, f'tr[data-name="{name}"] .status') == "Communicating")
    assert "HSMS active to 127.0.0.1:" in text_of(d, 'tr[data-name="Tool1"]')
    shot(d, "1-overview")

    # A connection: send S1F3 from the form; the reply shows, and both messages appear in the
    # live stream within a second.
    d.get(url + "#/equipment/Tool1")
    wait(d).until(lambda d: text_of(d, "#toggle") == "Disable")
    box = d.find_element(By.ID, "send-text")
    box.clear()
    box.send_keys("S1F3 W <L [2] <U4 1> <U4 2>>")
    d.find_element(By.ID, "send-button").click()
    wait(d, 1.0).until(lambda d: text_of(d, "#reply-sf") == "S1F4")
    wait(d, 1.0).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, '#stream-rows tr.received[data-sf="S1F4"]')
        and d.find_elements(By.CSS_SELECTOR, '#stream-rows tr.sent[data-sf="S1F3"]')
    )
    reply_row = d.find_element(By.CSS_SELECTOR, '#stream-rows tr.received[data-sf="S1F4"]')
    # The reply is linked to its request.
    assert "↩ S1F3" in reply_row.text
    reply_row.click()
    assert d.find_elements(By.CSS_SELECTOR, '#stream-rows tr.sent.linked[data-sf="S1F3"]')
    # A message the SDL refuses is reported, not sent.
    box.clear()
    box.send_keys("S1F3 W <A 'not a list'>")
    d.find_element(By.ID, "send-button").click()
    wait(d).until(lambda d: "does not match its SDL" in text_of(d, "#send-error"))
    d.find_element(By.CSS_SELECTOR, "#sdl summary").click()
    wait(d).until(lambda d: "sdl/messages.sdl" in text_of(d, "#sdl-text"))
    shot(d, "2-connection")

    # Handlers: the failing custom response handler shows its traceback.
    d.get(url + "#/handlers")
    wait(d).until(
        lambda d: "ValueError: lot tracking is down" in text_of(d, '.handler[data-name="onEventReport"] .traceback')
    )
    tb = text_of(d, '.handler[data-name="onEventReport"] .traceback')
    assert "Traceback" in tb and "onEventReport.py" in tb and "in check" in tb, tb
    shot(d, "3-handlers")

    # Tags: a counter updates while the page is open.
    d.get(url + "#/tags")
    cell = 'tr[data-path="[SECSGEM]Tool1/MessagesSent"] .value'
    wait(d).until(lambda d: text_of(d, cell) != "")
    before = text_of(d, cell)
    d.execute_script(
        "fetch('/api/connections/Tool1/send', {method: 'POST', headers: {'Content-Type': 'application/json'},"
        " body: JSON.stringify({text: 'S1F1 W'})})"
    )
    wait(d).until(lambda d: text_of(d, cell) not in ("", before))
    shot(d, "4-tags")

    # Simulators: start the lot run from its button; the simulator's events follow.
    d.get(url + "#/simulators")
    click(d, '.sim[data-name="Sim1"] button.run[data-run="lot"]')
    log.wait_for(r"event run started from the web console")
    click(d, '.sim[data-name="Sim1"] details summary')
    wait(d).until(lambda d: "WaferCounter" in text_of(d, '.sim[data-name="Sim1"] details'))
    shot(d, "5-simulators")

    # The message log finds the S1F3 sent from the form.
    d.get(url + "#/messages")
    sf = wait(d).until(lambda d: d.find_element(By.ID, "q-sf"))
    sf.send_keys("S1F3")
    d.find_element(By.ID, "q-go").click()
    wait(d).until(lambda d: "S1F3 W" in text_of(d, "#results tbody"))
    shot(d, "6-message-log")


def test_non_loopback_without_credentials_refuses_to_start(secsgate, tmp_path):
    project = tmp_path / "demo"
    shutil.copytree(DEMO, project)
    toml = project / "project.toml"
    toml.write_text(
        toml.read_text().replace("port = 5000", f"port = {free_port()}")
        + '\n[web]\naddress = "0.0.0.0:0"\n'
    )
    out = secsgate("run", str(project))
    assert out.returncode != 0
    assert "not a loopback address" in out.stderr and "password" in out.stderr, out.stderr
    assert "project.toml:" in out.stderr, out.stderr
    # `secsgate sim` follows the same rule.
    out = secsgate("sim", "--port", "0", "--web", "0.0.0.0:0", "--spool-dir", str(tmp_path / "spool"))
    assert out.returncode != 0
    assert "password" in out.stderr, out.stderr
