"""The browser page (web/) in a real headless Chromium: encode in the page and decode in Python, the reverse, bad
input shown in the page, screenshots and timings. Skipped with a reason unless Chromium, chromedriver, Selenium
and web/node_modules (cd web && npm ci) are installed."""
import base64
import io
import json
import os
import shutil
import threading

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")
try:
    import selenium  # noqa: F401
    HAVE_SELENIUM = True
except ImportError:
    HAVE_SELENIUM = False
MISSING = [what for what, ok in (("chromium (apt-get install chromium)", CHROMIUM),
                                 ("chromedriver (apt-get install chromium-driver)", DRIVER),
                                 ("selenium (pip install selenium)", HAVE_SELENIUM),
                                 ("web/node_modules (cd web && npm ci)",
                                  os.path.isdir(os.path.join(ROOT, "web", "node_modules", "onnxruntime-web"))))
           if not ok]
pytestmark = pytest.mark.skipif(bool(MISSING), reason="browser test needs " + ", ".join(MISSING))

# in-page helpers: an image URL / data URL -> ImageData, ImageData -> PNG data URL
HELPERS = """
window.toImageData = async (url) => {
  const blob = await (await fetch(url)).blob();
  const bmp = await createImageBitmap(blob);
  const c = new OffscreenCanvas(bmp.width, bmp.height), ctx = c.getContext('2d');
  ctx.drawImage(bmp, 0, 0);
  return ctx.getImageData(0, 0, bmp.width, bmp.height);
};
window.toPNG = async (imageData) => {
  const c = new OffscreenCanvas(imageData.width, imageData.height);
  c.getContext('2d').putImageData(imageData, 0, 0);
  const blob = await c.convertToBlob({type: 'image/png'});
  return await new Promise((r) => { const f = new FileReader(); f.onload = () => r(f.result); f.readAsDataURL(blob); });
};
"""


@pytest.fixture(scope="module")
def page():
    import sys
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    sys.path.insert(0, os.path.join(ROOT, "web"))
    import serve
    server = serve.make_server(0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,1100"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_script_timeout(300)
    driver.get(f"http://127.0.0.1:{server.server_address[1]}/web/index.html")
    driver.execute_async_script("const done = arguments[0]; window.stegastamp.ready.then(() => done(true), "
                                "(e) => done(String(e)))")
    driver.execute_script(HELPERS)
    yield driver
    driver.quit()
    server.shutdown()


def run_js(driver, body, *args):
    """Run an async JS body (which returns a value) in the page -> its JSON-able result or an exception text."""
    script = ("const done = arguments[arguments.length - 1]; const args = Array.from(arguments).slice(0, -1);"
              f"(async () => {{ {body} }})().then((v) => done({{ok: v}}), (e) => done({{error: String(e)}}))")
    out = driver.execute_async_script(script, *args)
    if "error" in out:
        raise AssertionError(f"page error: {out['error']}")
    return out["ok"]


def png_bytes(data_url):
    return base64.b64decode(data_url.split(",", 1)[1])


def test_page_encodes_python_decodes_and_back(page, tmp_path):
    from onnx_inference import OnnxStegaStamp
    from image_io import load_image
    py = OnnxStegaStamp(os.path.join(ROOT, "pretrained", "onnx"))
    # encoded in the page (full resolution), read by the Python decoder
    url = run_js(page, "const im = await window.toImageData('/examples/chelsea.jpg');"
                       "return await window.toPNG(await window.stegastamp.encode(im, 'Hello', {strength: 1}));")
    (tmp_path / "page.png").write_bytes(png_bytes(url))
    enc = load_image(tmp_path / "page.png")
    assert enc.size == load_image(os.path.join(ROOT, "examples", "chelsea.jpg")).size
    assert py.decode(enc).message == "Hello"
    # the same image encoded by Python: the page's pixels agree within a few levels
    ref = np.asarray(py.encode(load_image(os.path.join(ROOT, "examples", "chelsea.jpg")), "Hello")[0], int)
    assert np.abs(np.asarray(enc, int) - ref).mean() < 1.0
    # encoded by Python, read in the page
    buf = io.BytesIO()
    py_encoded = py.encode(load_image(os.path.join(ROOT, "examples", "chelsea.jpg")), "Hi Web")[0]
    py_encoded.save(buf, "PNG")
    data_url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    res = run_js(page, "return await window.stegastamp.decode(await window.toImageData(args[0]));", data_url)
    want = py.decode(py_encoded)
    assert res["message"] == want.message                                                    # same answer as Python
    if want.message is not None:   # resampling in JS differs from Pillow's by rounding: a bit near 0 may differ
        assert abs(res["correctedBits"] - want.corrected_bits) <= 2
    assert sum(a != b for a, b in zip(res["bits"], want.bits)) <= 2                          # near-identical bits
    res = run_js(page, "return await window.stegastamp.decode(await window.toImageData(args[0]));",
                 "data:image/png;base64," + base64.b64encode((tmp_path / "page.png").read_bytes()).decode())
    assert res["message"] == "Hello" and res["confidence"] > 0.5
    # an unmarked photo: no message, no confidence
    res = run_js(page, "return await window.stegastamp.decode(await window.toImageData('/examples/chelsea.jpg'));")
    assert res["message"] is None and res["confidence"] is None


def test_page_shows_bad_input_as_a_message(page, tmp_path):
    from selenium.webdriver.common.by import By
    page.get_screenshot_as_file(os.path.join(tmp_path, "before.png"))
    logs_before = len(page.get_log("browser")) if hasattr(page, "get_log") else 0
    bad = tmp_path / "notes.jpg"
    bad.write_text("<html>not a photo</html>")
    page.find_element(By.ID, "decode-file").send_keys(str(bad))
    status = lambda: page.find_element(By.ID, "status")
    page.implicitly_wait(0)
    for _ in range(600):
        if "not an image" in status().text:
            break
        page.execute_async_script("setTimeout(arguments[0], 50)")
    assert "notes.jpg: not an image this browser can read" in status().text and "error" in status().get_attribute("class")
    page.find_element(By.ID, "encode-file").send_keys(os.path.join(ROOT, "examples", "chelsea.jpg"))
    msg = page.find_element(By.ID, "message")
    msg.clear()
    msg.send_keys("much too long")
    page.find_element(By.ID, "encode-button").click()
    for _ in range(600):
        if "at most 7 fit" in status().text:
            break
        page.execute_async_script("setTimeout(arguments[0], 50)")
    assert "at most 7 fit" in status().text
    msg.clear()
    msg.send_keys("Hi!")
    page.find_element(By.ID, "encode-button").click()
    for _ in range(2400):
        if "Hidden" in status().text:
            break
        page.execute_async_script("setTimeout(arguments[0], 50)")
    assert 'Hidden "Hi!"' in status().text
    if os.environ.get("STEGASTAMP_SCREENSHOTS"):   # docs/web_before.png, docs/web_after.png (README)
        shutil.copy(os.path.join(tmp_path, "before.png"), os.path.join(ROOT, "docs", "web_before.png"))
        page.get_screenshot_as_file(os.path.join(ROOT, "docs", "web_after.png"))


def test_page_speed(page, capsys):
    """Encode and decode times in the page (printed, written to docs/web_speed.json with STEGASTAMP_SCREENSHOTS set;
    never asserted)."""
    res = run_js(page, """
      const times = {};
      for (const [name, w, h] of [['400x400', 400, 400], ['12MP', 4000, 3000]]) {
        const c = new OffscreenCanvas(w, h), ctx = c.getContext('2d');
        const g = ctx.createLinearGradient(0, 0, w, h); g.addColorStop(0, '#369'); g.addColorStop(1, '#fc3');
        ctx.fillStyle = g; ctx.fillRect(0, 0, w, h);
        const im = ctx.getImageData(0, 0, w, h);
        const enc = [], dec = [];
        for (let i = 0; i < 3; i++) {
          let t = performance.now(); const e = await window.stegastamp.encode(im, 'Speed'); enc.push(performance.now() - t);
          t = performance.now(); await window.stegastamp.decode(e); dec.push(performance.now() - t);
        }
        enc.sort((a, b) => a - b); dec.sort((a, b) => a - b);
        times[name] = {encode_ms: enc[1], decode_ms: dec[1]};
      }
      times.threads = window.stegastamp.threads;
      return times;""")
    print(json.dumps(res))
    assert set(res) == {"400x400", "12MP", "threads"}
    if os.environ.get("STEGASTAMP_SCREENSHOTS"):
        with open(os.path.join(ROOT, "docs", "web_speed.json"), "w") as f:
            json.dump(res, f, indent=1)


def test_page_reads_through_the_decoding_views_as_python_does(page):
    """A copy cropped by 22% per side that the whole image does not read: the page, like Python, finds the message
    through the decoding views, and with {tta: false} reads the whole image only, as Python's tta=False."""
    from onnx_inference import OnnxStegaStamp
    from distortions import crop_border
    from image_io import load_image
    py = OnnxStegaStamp(os.path.join(ROOT, "pretrained", "onnx"))
    cropped = crop_border(0.22)(py.encode(load_image(os.path.join(ROOT, "examples", "chelsea.jpg")), "Views")[0], None)
    assert py.decode(cropped, tta=False).message is None and py.decode(cropped).message == "Views"
    buf = io.BytesIO()
    cropped.save(buf, "PNG")
    data_url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    whole = run_js(page, "return await window.stegastamp.decode(await window.toImageData(args[0]), {tta: false});",
                   data_url)
    views = run_js(page, "return await window.stegastamp.decode(await window.toImageData(args[0]));", data_url)
    assert whole["message"] is None and views["message"] == "Views"
