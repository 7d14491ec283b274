"""The page in a real browser: Debian's chromium driven by selenium through the system chromedriver (no
browser download). Upload a sketch and a reference, colorize, and check that the picture on the page is
the API's picture; readable errors; the swap view; a phone-width layout.

`make test` installs chromium and chromium-driver (apt). SERVE_SCREENSHOT=docs/serve_screenshot.png (and
SERVE_SCREENSHOT_MODEL=demo for the bundled model) also writes the README's screenshot.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.serve.conftest import decode_png

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ASSETS = Path(__file__).resolve().parents[2] / "colorizer" / "assets"

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
        reason="chromium and chromium-driver are not installed (make test installs them: apt-get install chromium "
        "chromium-driver)",
    ),
]


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,900", "--force-device-scale-factor=1"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


def wait_for(driver, condition, timeout=90):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: condition(d))


def image_bytes(driver, element) -> bytes:
    """The bytes behind an <img> (a blob: URL), read by the page itself."""
    script = """
        const [img, done] = arguments;
        fetch(img.src).then(r => r.arrayBuffer()).then(buf => {
          let s = ""; const bytes = new Uint8Array(buf);
          for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
          done(btoa(s));
        }).catch(e => done("ERROR " + e));
    """
    encoded = driver.execute_async_script(script, element)
    assert not encoded.startswith("ERROR"), encoded
    return base64.b64decode(encoded)


def test_the_page_colorizes_like_the_api(serve, browser, tmp_path):
    from selenium.webdriver.common.by import By

    model = os.environ.get("SERVE_SCREENSHOT_MODEL")
    server = serve("--max-batch", "4", "--max-wait-ms", "20", model=model)
    server.wait_ready(120)
    sketch, reference = ASSETS / "demo_sketch.png", ASSETS / "demo_reference.png"
    find = browser.find_element

    browser.get(server.url + "/")
    wait_for(browser, lambda d: "torch" in find(By.ID, "model-line").text)
    assert not find(By.ID, "key-box").is_displayed() and not find(By.ID, "download").is_displayed()
    find(By.ID, "sketch-file").send_keys(str(sketch))
    find(By.ID, "reference-file").send_keys(str(reference))
    wait_for(browser, lambda d: "reference" in find(By.ID, "palette-source").text)
    seed = find(By.ID, "seed")
    seed.clear()
    seed.send_keys("5")
    find(By.ID, "colorize").click()
    result = find(By.ID, "result")
    wait_for(browser, lambda d: result.get_attribute("data-ready") == "1")
    on_page = decode_png(image_bytes(browser, result))

    with sketch.open("rb") as s, reference.open("rb") as r:
        api = server.client.post(
            "/v1/colorize", files={"sketch": ("s.png", s.read()), "reference": ("r.png", r.read())}, data={"seed": "5"}
        )
    assert api.status_code == 200, api.text
    assert np.array_equal(on_page, decode_png(api.content)), "the page shows another picture than the API returns"
    assert result.get_attribute("data-palette") == api.headers["x-colorizer-palette"]
    download = find(By.ID, "download")
    assert download.is_displayed() and download.get_attribute("href").startswith("blob:")
    assert download.get_attribute("download") == "colorized.png"
    # The swatches show the reference's colors (the API's palette route).
    swatches = [e.get_attribute("value") for e in browser.find_elements(By.CSS_SELECTOR, "#swatches input")]
    assert ",".join(swatches) == api.headers["x-colorizer-palette"]

    # The swap view: the sketch under four palettes, side by side.
    find(By.ID, "keep").click()
    find(By.ID, "swap").click()
    wait_for(
        browser,
        lambda d: (
            len(d.find_elements(By.CSS_SELECTOR, "#swap-grid img")) == 4
            and all(
                d.execute_script("return arguments[0].naturalWidth", e) > 0
                for e in d.find_elements(By.CSS_SELECTOR, "#swap-grid img")
            )
        ),  # fmt: skip
    )
    shot = os.environ.get("SERVE_SCREENSHOT")
    if shot:
        browser.set_window_size(1280, 1280)
        browser.execute_script("window.scrollTo(0, 0)")
        browser.save_screenshot(shot)

    # An API error is shown on the page, in the API's words.
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    find(By.ID, "sketch-file").send_keys(str(bad))
    find(By.ID, "colorize").click()
    error = find(By.ID, "error")
    wait_for(browser, lambda d: error.is_displayed() and "sketch:" in error.text)

    # Phone width: one column, nothing wider than the screen.
    browser.set_window_size(390, 844)
    wait_for(browser, lambda d: d.execute_script("return document.documentElement.scrollWidth <= window.innerWidth"))


def test_the_page_asks_for_the_api_key(serve, browser, monkeypatch):
    from selenium.webdriver.common.by import By

    server = serve("--api-key", "letmein")
    server.wait_ready(120)
    browser.get(server.url + "/")
    key_box = browser.find_element(By.ID, "key-box")
    wait_for(browser, lambda d: key_box.is_displayed())
    browser.find_element(By.ID, "api-key").send_keys("letmein")
    browser.find_element(By.ID, "key-save").click()
    wait_for(browser, lambda d: "torch" in d.find_element(By.ID, "model-line").text and not key_box.is_displayed())
