"""The explorer page in a real headless Chromium (Debian's `chromium`, driven by Playwright).

Skipped only when /usr/bin/chromium is absent and CI is not "true"; in CI a missing browser fails.
Playwright's own browser download is never used.

Also a script: `python tests/test_browser.py RUN_DIR OUT.png` serves RUN_DIR, exercises the page
as the test does and saves the screenshot (this is how docs/img/serve.png was made), and
`python tests/test_browser.py --layouts RUN_DIR FOLDER` checks the layout at every window size of
WINDOWS and saves one screenshot per size (docs/img/explorer-WxH.png).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
IN_CI = os.environ.get("CI") == "true"
LATENCY_MOVES = 20
# The window sizes the page must lay out cleanly at: laptops, desktops and a phone.
WINDOWS = [(1024, 768), (1280, 800), (1440, 900), (1920, 1080), (390, 844)]
TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]  # the page's first class colours (matplotlib's tab10)


def _require_browser() -> None:
    reason = None
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is absent (apt-get install -y chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "playwright is not installed (pip install 'vaelab[test]')"
    if reason is not None:
        if IN_CI:
            pytest.fail(f"CI=true but {reason}: the browser test must run in CI")
        pytest.skip(reason)


# -- a real server in a thread ---------------------------------------------------------------------


class Server:
    """uvicorn serving `app` on a free loopback port, in a daemon thread."""

    def __init__(self, app: Any):
        import uvicorn

        from vaelab.serve import bind, url_of

        self.sock = bind("127.0.0.1", 0)
        self.url = url_of(self.sock, "127.0.0.1")
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


# -- what the user does, step by step --------------------------------------------------------------


def wait_until(page: Any, expression: str, timeout: float = 10.0) -> None:
    """Poll a JS expression until it is truthy. (Playwright's wait_for_function evaluates strings,
    which the page's Content-Security-Policy forbids, as it should.)"""
    deadline = time.monotonic() + timeout
    while not page.evaluate(f"() => Boolean({expression})"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"still false after {timeout} s: {expression}")
        time.sleep(0.005)


def canvas_pixels(page: Any, canvas_id: str) -> np.ndarray:
    """The canvas's RGBA pixels as a (H, W, 4) uint8 array (read back losslessly as a PNG)."""
    import base64
    import io

    from PIL import Image

    url = page.evaluate("(id) => document.getElementById(id).toDataURL('image/png')", canvas_id)
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as im:
        return np.asarray(im.convert("RGBA"))


def open_page(browser: Any, url: str) -> tuple[Any, list[str], list[str]]:
    """A 1440x1000 page at `url`, waiting until the scatter and the first decode are drawn.
    Returns the page, the URLs it requested, and its errors (console errors, exceptions)."""
    page = browser.new_page(viewport={"width": 1440, "height": 1000}, device_scale_factor=1)
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(f"exception: {e}"))
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.goto(url)
    wait_until(page, "window.vaelab && window.vaelab.ready", 30)
    return page, requests, errors


def empty_spot(page: Any) -> tuple[float, float]:
    """Client coordinates of a plane position far (> 12 px) from every scatter point."""
    return tuple(
        page.evaluate(
            """() => { const s = window.vaelab.state;
            for (let py = 40; py < 540; py += 7) for (let px = 70; px < 580; px += 7) {
              let ok = true;
              for (let i = 0; i < s.px.length && ok; i++) ok = Math.hypot(s.px[i] - px, s.py[i] - py) > 12;
              if (ok) { const c = window.vaelab.planeClient(px, py, true); return [c.x, c.y]; }
            }
            return null; }"""
        )
    )


def drag_cursor(page: Any, start: tuple[float, float], points: list[tuple[float, float]]) -> list[float]:
    """Press on the plane at `start` and drag through `points`, waiting for each decoded image.
    Returns the mouse-move-to-image latency of each move (ms, measured in the page)."""
    count = lambda: page.evaluate("window.vaelab.decodes")  # noqa: E731
    n = count()
    page.mouse.move(*start)
    page.mouse.down()
    wait_until(page, f"window.vaelab.decodes > {n}")
    before = len(page.evaluate("window.vaelab.latencies"))
    for x, y in points:
        n = count()
        page.mouse.move(x, y)
        wait_until(page, f"window.vaelab.decodes > {n}", 10)
    page.mouse.up()
    return page.evaluate("window.vaelab.latencies")[before:]


def pick_two(page: Any, labels: tuple[int, int] | None = None) -> tuple[int, int]:
    """Click two scatter points (of the given classes, when labels exist) and wait for the strip.
    Returns their positions k in the scatter arrays."""
    pts = page.evaluate("window.vaelab.state.pts")
    n = len(pts["index"])
    if labels is not None and pts["labels"] is not None:
        ks = []
        for lab in labels:  # the point of that class nearest to the class's median position
            idx = [i for i in range(n) if pts["labels"][i] == lab]
            mx = statistics.median(pts["x"][i] for i in idx)
            my = statistics.median(pts["y"][i] for i in idx)
            ks.append(min(idx, key=lambda i: (pts["x"][i] - mx) ** 2 + (pts["y"][i] - my) ** 2))
        ka, kb = ks
    else:
        order = sorted(range(n), key=lambda i: pts["x"][i])
        ka, kb = order[len(order) // 10], order[-len(order) // 10]
    done = page.evaluate("window.vaelab.interpolations")
    for k in (ka, kb):
        xy = page.evaluate(f"window.vaelab.pointClient({k})")
        page.mouse.click(xy["x"], xy["y"])
    wait_until(page, f"window.vaelab.interpolations > {done}", 10)
    return ka, kb


def draw_stroke(page: Any, points: list[tuple[float, float]]) -> None:
    """Draw a polyline on the drawing canvas (coordinates in [0, 1] of its box); wait for the encoding."""
    box = page.locator("#draw").bounding_box()
    done = page.evaluate("window.vaelab.encodes")
    xy = [(box["x"] + u * box["width"], box["y"] + v * box["height"]) for u, v in points]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for x, y in xy[1:]:
        page.mouse.move(x, y, steps=4)
    page.mouse.up()
    wait_until(page, f"window.vaelab.encodes > {done}", 10)


SEVEN = [(0.22, 0.22), (0.78, 0.2), (0.6, 0.5), (0.45, 0.82)]


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


# -- the test --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A tiny VAE (784-32-2) trained for 2 epochs on 600 synthetic 28x28 images of 4 classes. Without
    the output-bias init: that starts the decoder at the mean image, grey everywhere for these
    quadrant images, and 2 epochs then draw no ink for the page checks below."""
    return _train_quadrants(tmp_path_factory.mktemp("browser"), latent_dim=2)


def _train_quadrants(root: Path, latent_dim: int) -> Path:
    from conftest import train_tiny_run

    return train_tiny_run(
        root, hw=28, hidden=(32,), latent_dim=latent_dim, batch_size=50, name="quadrants", init_output_bias=False
    )


def test_page_in_chromium(trained_run, tmp_path, record_property):
    _require_browser()
    from playwright.sync_api import sync_playwright

    from vaelab.serve import app_from_run

    with Server(app_from_run(trained_run)) as srv, sync_playwright() as p:
        browser = launch(p)
        try:
            page, requests, errors = open_page(browser, srv.url)

            # The headings name this run's prior and data, from /api/info (quadrants are no digits).
            assert page.locator("#sample-sub").inner_text() == "pixel means of p(x|z), z ~ N(0, I)"
            assert page.locator("#h-draw").inner_text() == "Draw an image"

            # The scatter: all 60 test points, in the four class colours, with a 4-entry legend.
            assert page.locator("#plane").get_attribute("data-points") == "60"
            rgb = canvas_pixels(page, "plane")[..., :3].astype(int)
            for hex_ in TAB10[:4]:  # a point alone on white: 72% of its class colour
                colour = np.array([int(hex_[i : i + 2], 16) for i in (1, 3, 5)])
                blended = np.round(0.72 * colour + 0.28 * 255)
                assert (np.abs(rgb - blended).max(-1) <= 3).sum() > 10, hex_
            assert page.locator("#legend span").count() == 4

            # Drag the cursor across the plane: the decoded image follows, pixel for pixel.
            x0, y0 = empty_spot(page)
            box = page.locator("#overlay").bounding_box()
            first = canvas_pixels(page, "decoded")
            path = [
                (
                    box["x"] + box["width"] * (0.15 + 0.7 * i / (LATENCY_MOVES - 1)),
                    box["y"] + box["height"] * (0.8 - 0.6 * i / (LATENCY_MOVES - 1)),
                )
                for i in range(LATENCY_MOVES)
            ]
            latencies = drag_cursor(page, (x0, y0), path)
            last = canvas_pixels(page, "decoded")
            assert len(latencies) == LATENCY_MOVES and all(0 < t < 60_000 for t in latencies)
            assert np.abs(last[..., 0].astype(int) - first[..., 0].astype(int)).max() > 30
            z = page.evaluate("Array.from(window.vaelab.state.z)")
            want = page.evaluate(
                "(z) => fetch('/api/decode', {method: 'POST', headers: {'content-type': "
                "'application/json'}, body: JSON.stringify({z: [z]})}).then(r => r.json())",
                z,
            )
            img = np.array(want["images"][0]).reshape(28, 28)
            centres = last[4::9, 4::9, 0].astype(int)  # 9x nearest-neighbour: the middle of each pixel
            np.testing.assert_allclose(centres, np.round(255 * (1 - img)), atol=1)
            median = statistics.median(latencies)
            record_property("decode_latency_median_ms", round(median, 2))
            print(
                f"\nmouse-move -> decoded image: median {median:.1f} ms over {len(latencies)} moves "
                f"(min {min(latencies):.1f}, max {max(latencies):.1f})"
            )

            # Interpolation between two clicked test images: 10 images, the path starts at A's mean.
            ka, kb = pick_two(page, labels=(0, 3))
            assert page.locator("#interp-strip").get_attribute("data-steps") == "10"
            state = page.evaluate("({path: window.vaelab.state.path, picks: window.vaelab.state.picks})")
            assert len(state["path"]) == 10
            ia = state["picks"][0]["index"]
            item = page.evaluate(f"fetch('/api/test/{ia}').then(r => r.json())")
            np.testing.assert_allclose(state["path"][0], item["z"], rtol=1e-5, atol=1e-5)
            strip = canvas_pixels(page, "interp-strip")[..., 0]
            assert strip.shape[1] >= 10 * 28 and (strip < 128).sum() > 100

            # Draw a stroke: it is encoded, its point appears, its reconstruction is drawn.
            blank = canvas_pixels(page, "draw-recon")
            assert (blank[..., 0] == 255).all()
            draw_stroke(page, SEVEN)
            recon = canvas_pixels(page, "draw-recon")[..., 0]
            assert (recon < 200).sum() > 100
            drawn = page.evaluate("Array.from(window.vaelab.state.drawn)")
            assert len(drawn) == 2 and all(np.isfinite(drawn))

            # Samples were drawn, nothing failed, and nothing left this server.
            assert (canvas_pixels(page, "samples")[..., 0] < 128).sum() > 100
            assert page.evaluate("window.vaelab.errors") == [] and errors == []
            assert requests and all(u.startswith(srv.url) or u.startswith("data:") for u in requests), requests
            shot = tmp_path / "serve.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 20_000
        finally:
            browser.close()


# -- layout at every window size -------------------------------------------------------------------

LAYOUT_PROBLEMS = """() => {
  const problems = [];
  const vw = document.documentElement.clientWidth;
  if (document.documentElement.scrollWidth > vw + 0.5)
    problems.push(`horizontal scrollbar: the page is ${document.documentElement.scrollWidth} px wide in ${vw}`);
  const visible = (el) => { const r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0 && !el.closest('[hidden]'); };
  const name = (el) => el.id ? '#' + el.id : el.className ? el.tagName.toLowerCase() + '.' + String(el.className).split(' ')[0] : el.tagName.toLowerCase();
  const boxes = [document.querySelector('header'), ...document.querySelectorAll('.panel')].filter(visible);
  const rects = boxes.map((el) => el.getBoundingClientRect());
  for (let i = 0; i < boxes.length; i++) {
    const a = rects[i];
    if (a.left < -0.5 || a.right > vw + 0.5) problems.push(`${name(boxes[i])} is cut off: x ${a.left}..${a.right} in ${vw}`);
    for (let j = i + 1; j < boxes.length; j++) {
      const b = rects[j];
      const w = Math.min(a.right, b.right) - Math.max(a.left, b.left), h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
      if (w > 0.5 && h > 0.5) problems.push(`${name(boxes[i])} and ${name(boxes[j])} overlap by ${w.toFixed(1)} x ${h.toFixed(1)} px`);
    }
  }
  for (const panel of document.querySelectorAll('.panel')) {
    if (!visible(panel)) continue;
    const p = panel.getBoundingClientRect();
    for (const el of panel.querySelectorAll('canvas, select, button, input, label, h2, figure, .legend, .sliders')) {
      if (!visible(el) || el.closest('.tooltip')) continue;
      const r = el.getBoundingClientRect();
      if (r.left < p.left - 0.5 || r.right > p.right + 0.5 || r.top < p.top - 0.5 || r.bottom > p.bottom + 0.5)
        problems.push(`${name(el)} sticks out of ${name(panel)}: ${r.left.toFixed(1)}..${r.right.toFixed(1)} x ${r.top.toFixed(1)}..${r.bottom.toFixed(1)} in ${p.left.toFixed(1)}..${p.right.toFixed(1)} x ${p.top.toFixed(1)}..${p.bottom.toFixed(1)}`);
    }
  }
  return problems;
}"""


def check_layouts(browser: Any, url: str, folder: Path) -> dict[str, list[str]]:
    """Open the page at each size of WINDOWS, interpolate (so every panel has content), and return
    the layout problems found at each size; save a screenshot per size as FOLDER/explorer-WxH.png."""
    found = {}
    for w, h in WINDOWS:
        page = browser.new_page(viewport={"width": w, "height": h}, device_scale_factor=1)
        try:
            page.goto(url)
            wait_until(page, "window.vaelab && window.vaelab.ready", 30)
            page.locator("#interp-panel, .interp-panel").first.scroll_into_view_if_needed()
            page.evaluate("window.scrollTo(0, 0)")
            pick_two(page)
            page.evaluate("window.scrollTo(0, 0)")
            found[f"{w}x{h}"] = page.evaluate(LAYOUT_PROBLEMS)
            page.screenshot(path=str(folder / f"explorer-{w}x{h}.png"), full_page=True)
        finally:
            page.close()
    return found


@pytest.fixture(scope="module")
def trained_run_5d(tmp_path_factory) -> Path:
    """As trained_run, with a 5-dimensional latent: the page then offers its plane choice and 5 sliders."""
    return _train_quadrants(tmp_path_factory.mktemp("browser5d"), latent_dim=5)


def test_layout_at_every_window_size(trained_run_5d, tmp_path):
    """No two panels overlap, nothing sticks out of its panel or the window, no horizontal scrollbar,
    at 1024x768, 1280x800, 1440x900, 1920x1080 and on a phone (390x844)."""
    _require_browser()
    from playwright.sync_api import sync_playwright

    from vaelab.serve import app_from_run

    with Server(app_from_run(trained_run_5d)) as srv, sync_playwright() as p:
        browser = launch(p)
        try:
            found = check_layouts(browser, srv.url, tmp_path)
        finally:
            browser.close()
    assert set(found) == {f"{w}x{h}" for w, h in WINDOWS}
    assert not {k: v for k, v in found.items() if v}  # the window sizes with problems, and what they are
    for w, h in WINDOWS:
        assert (tmp_path / f"explorer-{w}x{h}.png").stat().st_size > 10_000


def test_plane_choice_and_a_slider_per_dimension(trained_run_5d):
    """D = 5: a slider per dimension, and the plane can be two chosen dimensions: then the scatter's
    coordinates are exactly those dimensions of the latent means, and the cursor moves only them."""
    _require_browser()
    from playwright.sync_api import sync_playwright

    from vaelab.serve import app_from_run

    with Server(app_from_run(trained_run_5d)) as srv, sync_playwright() as p:
        browser = launch(p)
        try:
            page, _, errors = open_page(browser, srv.url)
            assert page.locator("#sliders input[type=range]").count() == 5
            assert page.evaluate("window.vaelab.state.pts.plane") == "pca"
            assert page.locator("#plane-controls").is_visible()
            n = page.evaluate("window.vaelab.planes")
            page.select_option("#plane-mode", "dims")
            wait_until(page, f"window.vaelab.planes > {n}")
            n = page.evaluate("window.vaelab.planes")
            page.select_option("#dim-x", "3")
            wait_until(page, f"window.vaelab.planes > {n}")
            pts = page.evaluate("window.vaelab.state.pts")
            assert pts["plane"] == "dims" and (pts["x_label"], pts["y_label"]) == ("z4", "z2")
            k = 7
            item = page.evaluate(f"fetch('/api/test/{pts['index'][k]}').then(r => r.json())")
            np.testing.assert_allclose([pts["x"][k], pts["y"][k]], [item["z"][3], item["z"][1]], rtol=1e-5, atol=1e-5)
            before = page.evaluate("Array.from(window.vaelab.state.z)")
            box = page.locator("#overlay").bounding_box()
            drag_cursor(page, empty_spot(page), [(box["x"] + 0.3 * box["width"], box["y"] + 0.6 * box["height"])])
            after = page.evaluate("Array.from(window.vaelab.state.z)")
            moved = [i for i in range(5) if abs(after[i] - before[i]) > 1e-9]
            assert set(moved) <= {1, 3} and moved, (before, after)
            assert abs(float(page.locator("#slider-3").input_value()) - after[3]) < 0.01  # the slider follows
            assert page.evaluate("window.vaelab.errors") == [] and errors == []
        finally:
            browser.close()


def test_traversals_and_colour_by_factor(trained_run_5d):
    """D = 5 on data with factors: a picked point's traversal has a row per dimension, ordered by KL
    as the API says; the scatter can be coloured by a factor, with a legend that names it."""
    _require_browser()
    from playwright.sync_api import sync_playwright

    from vaelab.data import ImageData, load_splits
    from vaelab.run.checkpoint import load, read_config
    from vaelab.serve import Explorer, create_app

    test = load_splits(read_config(trained_run_5d).data).test
    n = len(test)
    factors = np.stack([test.labels.numpy().astype(np.float64), np.linspace(0.0, 2.0, n)], 1)
    data = ImageData(test.images, test.labels, factors=factors)
    explorer = Explorer(load(trained_run_5d), data, (), name="f", dataset="q", factor_names=("quadrant", "ramp"))
    with Server(create_app(explorer)) as srv, sync_playwright() as p:
        browser = launch(p)
        try:
            page, _, errors = open_page(browser, srv.url)
            assert page.locator("#trav-panel").is_visible() and page.locator("#colour-wrap").is_visible()
            k = 3
            page.mouse.click(**page.evaluate(f"window.vaelab.pointClient({k})"))
            wait_until(page, "window.vaelab.traversals > 0")
            assert page.locator("#trav-rows").get_attribute("data-rows") == "5"
            index = page.evaluate(f"window.vaelab.state.pts.index[{k}]")
            doc = page.evaluate(f"fetch('/api/traverse/{index}?steps=9').then(r => r.json())")
            labels = page.locator(".trav-label").all_inner_texts()
            assert labels == [f"z{d + 1} · KL {kl:.2f}" for d, kl in zip(doc["dims"], doc["kl"])]
            assert page.locator(".trav-row canvas").count() == 5
            page.fill("#trav-steps", "4")
            page.dispatch_event("#trav-steps", "change")
            wait_until(page, "window.vaelab.traversals > 1")
            width = page.evaluate("document.querySelector('.trav-row canvas').width")
            assert width == 4 * 28 * 2 + 3 * 2  # 4 images at 2x, 2 px apart (device scale 1)
            page.select_option("#colour-by", "ramp")
            legend = page.locator("#legend").inner_text()
            assert "ramp 0" in legend and "ramp 1" in legend and "ramp 2" in legend
            page.select_option("#colour-by", "quadrant")
            assert page.locator("#legend span").count() == 4
            assert page.evaluate("window.vaelab.errors") == [] and errors == []
        finally:
            browser.close()


# -- the documentation screenshot ------------------------------------------------------------------


def main(run_dir: str, out: str) -> None:
    """Serve RUN_DIR, do what a user does, save a screenshot and print the decode latency."""
    from playwright.sync_api import sync_playwright

    from vaelab.serve import app_from_run

    with Server(app_from_run(run_dir)) as srv, sync_playwright() as p:
        browser = launch(p)
        try:
            page, requests, errors = open_page(browser, srv.url)
            box = page.locator("#overlay").bounding_box()
            path = [
                (
                    box["x"] + box["width"] * (0.2 + 0.5 * i / (LATENCY_MOVES - 1)),
                    box["y"] + box["height"] * (0.75 - 0.35 * i / (LATENCY_MOVES - 1)),
                )
                for i in range(LATENCY_MOVES)
            ]
            latencies = drag_cursor(page, empty_spot(page), path)
            top = max(page.evaluate("window.vaelab.state.pts.labels") or [1])
            pick_two(page, labels=(0, min(7, top)))
            draw_stroke(page, SEVEN)
            k = max(0, page.evaluate("(window.vaelab.state.pts.labels || []).indexOf(2)"))
            xy = page.evaluate(f"window.vaelab.pointClient({k})")
            page.mouse.move(xy["x"], xy["y"])  # show the hover tooltip
            page.wait_for_timeout(300)
            page.screenshot(path=out, full_page=True)
            from PIL import Image  # 256 colours without dithering: crisp, and a third of the size

            with Image.open(out) as im:
                im.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
                    out, optimize=True
                )
            report = {
                "median_ms": statistics.median(latencies),
                "min_ms": min(latencies),
                "max_ms": max(latencies),
                "moves": len(latencies),
                "external_requests": [u for u in requests if not u.startswith(srv.url)],
                "errors": errors + page.evaluate("window.vaelab.errors"),
            }
            print(json.dumps(report, indent=2))
        finally:
            browser.close()


def layouts(run_dir: str, folder: str) -> None:
    """Serve RUN_DIR, check the layout at every size of WINDOWS and save the screenshots in FOLDER."""
    from playwright.sync_api import sync_playwright

    from vaelab.serve import app_from_run

    with Server(app_from_run(run_dir)) as srv, sync_playwright() as p:
        browser = launch(p)
        try:
            found = check_layouts(browser, srv.url, Path(folder))
        finally:
            browser.close()
    from PIL import Image  # 256 colours without dithering, as for docs/img/serve.png

    for shot in Path(folder).glob("explorer-*.png"):
        with Image.open(shot) as im:
            small = im.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        small.save(shot, optimize=True)
    print(json.dumps(found, indent=2))
    if any(found.values()):
        raise SystemExit("layout problems found")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--layouts":
        layouts(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3:
        main(sys.argv[1], sys.argv[2])
    else:
        raise SystemExit("usage: python tests/test_browser.py RUN_DIR OUT.png | --layouts RUN_DIR FOLDER")
