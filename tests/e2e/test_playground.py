"""The consultation playground in a real browser (headless Chromium) against real servers.

The shared tiny-model server carries the happy path, the markup-injection checks, storage and
the screenshots; one more server (slow model, an API key, room for one request) carries 401,
429 and Stop. Screenshots always go to a temporary folder; with HUATUO_UPDATE_SCREENSHOTS=1
they also replace docs/img/playground-*.png.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.browser import (
    DESKTOP,
    PHONE,
    chromium,
    screenshot,
    set_viewport,
    wait_for,
)
from tests.support.server_process import ROOT, ServerProcess, start_server

pytestmark = pytest.mark.e2e
KEY = "test-key"
SLOW_MODEL = "slow-huatuo"
STORE = "huatuo.playground.conversations"
XSS = '<img src=x onerror="window.__xss=1">'


# ---- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def guarded_server(slow_model_dir: Path, tmp_path_factory) -> Iterator[ServerProcess]:
    """Slow model (answers still streaming seconds later), a key, and one request at a time."""
    log = tmp_path_factory.mktemp("logs") / "playground-guarded.log"
    server = start_server(
        ["--model", str(slow_model_dir), "--api-key", KEY, "--max-concurrent-requests", "1",
         "--dtype", "float32", "--max-model-len", "2048"], log)
    yield server
    server.stop()


@pytest.fixture
def browser() -> Iterator:
    with chromium() as driver:
        yield driver


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("playground-screenshots")


# ---- page helpers --------------------------------------------------------------------------
def js(driver, script: str, *args):
    return driver.execute_script(script, *args)


def by_id(driver, element_id: str):
    return driver.find_element("id", element_id)


def open_page(driver, server: ServerProcess, key: str | None = None) -> None:
    driver.get(server.base_url + "/")
    if key is not None:  # as if typed in Settings before: the page reads it from sessionStorage
        js(driver, "sessionStorage.setItem('huatuo.playground.apiKey', arguments[0])", key)
        driver.refresh()
        wait_for(lambda: js(driver, "return document.getElementById('model').options.length"),
                 message="the model list")


def set_field(driver, element_id: str, value: str) -> None:
    field = by_id(driver, element_id)
    field.clear()
    field.send_keys(value)
    js(driver, "arguments[0].dispatchEvent(new Event('change'))", field)


def settings(driver, **values: str) -> None:
    if not by_id(driver, "settings").is_displayed():
        by_id(driver, "toggle-settings").click()
    for element_id, value in values.items():
        set_field(driver, element_id.replace("_", "-"), value)


def ask(driver, text: str) -> None:
    box = by_id(driver, "question")
    box.clear()
    box.send_keys(text)
    by_id(driver, "send").click()


def wait_idle(driver, timeout: float = 120) -> None:
    wait_for(lambda: by_id(driver, "send").is_displayed(), timeout, message="the answer to end")


def answer_text(driver) -> str:
    return js(driver, """const a = document.querySelectorAll('#messages .msg.assistant .content');
                         return a.length ? a[a.length - 1].textContent : '';""")


def watch_answer_lengths(driver) -> None:
    """Record the length of the answer being streamed each time the page redraws it."""
    js(driver, """window.__lengths = [];
        new MutationObserver(() => {
          const a = document.querySelectorAll('#messages .msg.assistant .content');
          if (a.length) window.__lengths.push(a[a.length - 1].textContent.length);
        }).observe(document.getElementById('messages'),
                   {childList: true, subtree: true, characterData: true});""")


def never_end_on_eos(driver) -> None:
    """Add ignore_eos to the page's chat requests: the random model samples its EOS token now
    and then, and an answer that ends on its own cannot be stopped."""
    js(driver, """const send = window.fetch;
        window.fetch = (url, init) => {
          if (String(url).endsWith('/v1/chat/completions') && init && init.body) {
            init = {...init, body: JSON.stringify({...JSON.parse(init.body), ignore_eos: true})};
          }
          return send(url, init);
        };""")


def status_text(driver) -> str:
    return js(driver, "const s = document.getElementById('status'); "
                      "return s.hidden ? '' : s.textContent;")


def stored(driver) -> dict:
    return json.loads(js(driver, f"return localStorage.getItem('{STORE}')") or "null") or {}


def scrape(server: ServerProcess, name: str) -> float:
    text = httpx.get(f"{server.base_url}/metrics",
                     headers={"Authorization": f"Bearer {KEY}"}).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def restore_conversation(driver, messages: list[dict], theme: str = "auto") -> None:
    """Put a consultation in local storage, as a previous visit would have, and reload."""
    conversation = {"id": "restored", "title": messages[0]["content"][:60],
                    "created": 1764590400000, "messages": messages}
    js(driver, """localStorage.setItem(arguments[0], arguments[1]);
                  localStorage.setItem('huatuo.playground.settings', arguments[2]);""",
       STORE, json.dumps({"current": "restored", "conversations": [conversation]}),
       json.dumps({"theme": theme}))
    driver.refresh()
    wait_for(lambda: js(driver, "return document.querySelectorAll('#messages .msg').length")
             == len(messages), message="the restored conversation")


# ---- the shared tiny-model server ----------------------------------------------------------
def test_streamed_consultation_is_kept_across_reload_then_cleared(
        server: ServerProcess, browser, shots: Path) -> None:
    open_page(browser, server)
    wait_for(lambda: js(browser, "return document.getElementById('model').value"),
             message="the model list")
    assert by_id(browser, "key-box").get_attribute("hidden") is not None  # no keys: no field
    settings(browser, temperature="1", max_tokens="400")
    watch_answer_lengths(browser)
    ask(browser, "头痛怎么办？ What should I do about a headache?")
    wait_for(lambda: by_id(browser, "stop").is_displayed() or answer_text(browser),
             message="the stream to start")
    wait_idle(browser)

    # That the text arrives in several steps is asserted on the slow model, where the answer
    # streams for seconds (test_stop_cancels_the_answer_and_frees_the_engine): the tiny model
    # can finish before a busy browser draws its first frame.
    lengths = [n for n in js(browser, "return window.__lengths") if n]
    answer = answer_text(browser)
    assert answer and by_id(browser, "question").get_attribute("value") == ""
    saved = stored(browser)["conversations"][0]["messages"]
    assert [m["role"] for m in saved] == ["user", "assistant"]
    # What was stored is what was drawn (less the line breaks the Markdown renders as <br>).
    assert "".join(answer.split())[:40] in "".join(saved[1]["content"].split())
    (shots / "timing.json").write_text(json.dumps({
        "first_text_ms": saved[1]["firstTextMs"], "redraws": len(lengths),
        "page_bytes": sum(len(httpx.get(server.base_url + p).content)
                          for p in ("/", "/playground/app.js", "/playground/style.css"))}))
    print(f"\nfirst streamed text after {saved[1]['firstTextMs']} ms; "
          f"{len(lengths)} redraws; screenshots in {shots}")

    browser.refresh()
    wait_for(lambda: answer_text(browser) == answer, message="the conversation after reload")
    assert "头痛怎么办" in by_id(browser, "messages").text

    by_id(browser, "toggle-history").click()
    by_id(browser, "clear-all").click()
    browser.switch_to.alert.accept()
    wait_for(lambda: not js(browser, "return document.querySelectorAll('#messages .msg').length"),
             message="the conversation to go")
    assert stored(browser).get("conversations", []) == []
    browser.refresh()
    assert not browser.find_elements("css selector", "#messages .msg")


def test_markup_in_question_and_answer_renders_as_text(server: ServerProcess, browser) -> None:
    open_page(browser, server)
    wait_for(lambda: js(browser, "return document.getElementById('model').value"))
    settings(browser, max_tokens="8")
    question = f"{XSS} <script>window.__xss=2</script> 咳嗽"
    ask(browser, question)
    wait_idle(browser)
    assert js(browser, "return document.querySelector('#messages .msg.user .content')"
                       ".textContent") == question

    # A model answer with markup, through the page's own renderer (restored from storage: the
    # same function draws streamed answers); a random model cannot be made to say this.
    evil = "\n".join([
        f"Plain {XSS} and <script>window.__xss=3</script>",
        f"**bold {XSS}** and `code {XSS}`",
        "[click me](javascript:window.__xss=4) and [safe](https://example.org/a)",
        f"- item {XSS}",
        "```html", f"{XSS}<script>window.__xss=5</script>", "```",
        '<a href="javascript:window.__xss=6">x</a> <svg onload="window.__xss=7"></svg>',
    ])
    restore_conversation(browser, [{"role": "user", "content": question},
                                   {"role": "assistant", "content": evil}])
    answer = browser.find_element("css selector", "#messages .msg.assistant .content")
    for tag in ("img", "script", "svg", "iframe"):
        assert not answer.find_elements("tag name", tag), tag
    assert not browser.find_elements("css selector", "#messages img, #messages script")
    text = answer.text
    assert XSS in text and "<script>window.__xss=3</script>" in text
    links = answer.find_elements("tag name", "a")
    assert [a.get_attribute("href") for a in links] == ["https://example.org/a"]
    assert "noopener" in links[0].get_attribute("rel")
    assert "javascript:window.__xss=4" in text  # shown as text, not a link
    # The safe Markdown still renders.
    assert answer.find_elements("css selector", "strong")
    assert answer.find_elements("css selector", "ul li")
    assert answer.find_element("css selector", ".code pre code").text.startswith("<img")
    time.sleep(0.5)  # an image error handler would have fired by now
    assert js(browser, "return window.__xss") is None


SAMPLE = [
    {"role": "user", "content": "我最近总是头痛，下午更严重，应该注意什么？"},
    {"role": "assistant", "meta": "182 tokens · first text after 0.21 s · 3.4 s",
     "content": "\n".join([
        "头痛的原因很多，下午加重常见于**紧张型头痛**、睡眠不足或用眼过度。可以先这样做：",
        "",
        "1. 保证 7–8 小时睡眠，作息规律；",
        "2. 每用眼 45 分钟休息 5 分钟，注意坐姿和颈部放松；",
        "3. 少喝咖啡和浓茶，多喝水。",
        "",
        "**出现以下情况请尽快就医：** 突发剧烈头痛、伴发热或颈部僵硬、视物模糊、"
        "肢体无力或说话不清。",
        "",
        "A *headache diary* helps your doctor:",
        "",
        "```text",
        "date       time   pain 0-10  sleep (h)  medicine",
        "2025-12-01 16:00  6          5.5        ibuprofen 200 mg",
        "```",
    ])},
    {"role": "user", "content": "Can I take ibuprofen every day?"},
    {"role": "assistant", "meta": "64 tokens · first text after 0.18 s · 1.2 s", "content": (
        "Not every day without advice: taking pain relievers on more than 10-15 days a month "
        "can itself cause **medication-overuse headache**. Ask a doctor if you need them "
        "that often.")},
]


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_screenshots(server: ServerProcess, browser, shots: Path, theme: str) -> None:
    """Light and dark, desktop and phone width: a sample consultation restored from storage
    (the test models answer random tokens)."""
    open_page(browser, server)
    restore_conversation(browser, SAMPLE, theme=theme)
    update = os.environ.get("HUATUO_UPDATE_SCREENSHOTS") == "1"
    for name, (width, height), mobile in (("desktop", DESKTOP, False), ("phone", PHONE, True)):
        set_viewport(browser, width, height, mobile)
        by_id(browser, "question").send_keys("")  # settle layout
        js(browser, "window.scrollTo(0, 0)")
        time.sleep(0.3)
        # Nothing wider than the screen: no sideways scrolling on a phone.
        assert js(browser, "return document.documentElement.scrollWidth") <= width
        path = screenshot(browser, shots / f"playground-{theme}-{name}.png")
        if update:
            target = ROOT / "docs" / "img" / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())


# ---- the guarded server: key, admission limit 1, slow model --------------------------------
def test_missing_key_is_explained_and_question_kept(guarded_server: ServerProcess,
                                                    browser) -> None:
    open_page(browser, guarded_server)
    wait_for(lambda: "(401)" in status_text(browser), message="the 401 message")
    assert by_id(browser, "api-key").is_displayed()
    ask(browser, "我发烧了 without a key")
    wait_for(lambda: "API key" in status_text(browser) and by_id(browser, "send").is_displayed())
    assert "(401)" in status_text(browser)
    assert by_id(browser, "question").get_attribute("value") == "我发烧了 without a key"
    assert not browser.find_elements("css selector", "#messages .msg")

    set_field(browser, "api-key", KEY)
    wait_for(lambda: js(browser, "return document.getElementById('model').value") == SLOW_MODEL,
             message="the models once the key is given")
    assert status_text(browser) == ""
    # The key lives in this tab's session storage only, never in local storage.
    assert js(browser, "return sessionStorage.getItem('huatuo.playground.apiKey')") == KEY
    assert KEY not in js(browser, "return JSON.stringify(localStorage)")


def occupy_the_only_slot(server: ServerProcess, release: threading.Event,
                         started: threading.Event) -> None:
    body = {"model": SLOW_MODEL, "messages": [{"role": "user", "content": "hold"}],
            "max_tokens": 1800, "temperature": 1.0, "stream": True,
            "ignore_eos": True}  # the random model's EOS would free the slot early
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as response:
        for _ in response.iter_lines():
            started.set()
            if release.is_set():
                return  # closing the connection aborts the request


def test_busy_server_429_is_explained_with_retry_after(guarded_server: ServerProcess,
                                                       browser) -> None:
    open_page(browser, guarded_server, key=KEY)
    release, started = threading.Event(), threading.Event()
    holder = threading.Thread(target=occupy_the_only_slot,
                              args=(guarded_server, release, started), daemon=True)
    holder.start()
    try:
        assert started.wait(120), "the holding request never started"
        ask(browser, "Is my blood pressure too high? 140/90")
        wait_for(lambda: "(429)" in status_text(browser), message="the 429 message")
        assert "retry in 1 second" in status_text(browser)
        assert by_id(browser, "question").get_attribute("value") == \
            "Is my blood pressure too high? 140/90"
        assert not browser.find_elements("css selector", "#messages .msg")
    finally:
        release.set()
        holder.join(60)
    wait_for(lambda: scrape(guarded_server, "vllm:num_requests_running") == 0, 30,
             interval=0.3, message="the holding request to end")


def test_stop_cancels_the_answer_and_frees_the_engine(guarded_server: ServerProcess,
                                                      browser) -> None:
    open_page(browser, guarded_server, key=KEY)
    settings(browser, temperature="1", max_tokens="1800")
    watch_answer_lengths(browser)
    never_end_on_eos(browser)
    ask(browser, "Tell me everything about diabetes. 请详细介绍糖尿病。")
    wait_for(lambda: len({n for n in js(browser, "return window.__lengths") if n}) >= 2, 120,
             message="the answer to arrive in more than one step")
    wait_for(lambda: scrape(guarded_server, "vllm:num_requests_running") == 1, 10,
             interval=0.2, message="the engine to be running the answer")
    by_id(browser, "stop").click()
    stopped_at = time.monotonic()
    wait_for(lambda: scrape(guarded_server, "vllm:num_requests_running") == 0, 10,
             interval=0.2, message="the engine's running requests to return to 0")
    print(f"\nengine idle {time.monotonic() - stopped_at:.2f} s after Stop")
    wait_idle(browser, 10)
    kept = answer_text(browser)
    assert kept, "the partial answer is kept"
    assert "Stopped." in by_id(browser, "messages").text
    saved = stored(browser)["conversations"][0]["messages"]
    assert saved[1]["content"] and saved[1]["error"] == "Stopped."


# ---- an in-process gateway over the fake engine: failures on cue, context in characters ----
class FakeGateway:
    """`build_app` over `FakeEngine` under uvicorn in a thread: starts in a second."""

    def __init__(self, engine) -> None:
        import uvicorn

        from server.app import build_app
        from server.settings import ServeSettings
        from tests.support.fake_engine import fake_model
        from tests.support.server_process import free_port

        self.engine = engine
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        app = build_app(ServeSettings(), engine, fake_model(max_model_len=256))
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, 30, message="the in-process gateway")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture
def fake_gateway() -> Iterator[FakeGateway]:
    from tests.support.fake_engine import FakeEngine

    gateway = FakeGateway(FakeEngine(token_delay=0.05))
    yield gateway
    gateway.stop()


def test_trimmed_turns_are_announced(fake_gateway: FakeGateway, browser) -> None:
    open_page(browser, fake_gateway)
    # The fake model counts one token per character in a 256-token context.
    old = [{"role": r, "content": ("问" if r == "user" else "答") * 60}
           for _ in range(3) for r in ("user", "assistant")]
    restore_conversation(browser, old)
    wait_for(lambda: js(browser, "return document.getElementById('model').value") == "fake")
    settings(browser, max_tokens="4")
    ask(browser, "And now?")
    wait_idle(browser, 30)
    note = browser.find_elements("css selector", "#messages .msg.assistant .note")[-1].text
    assert "left out the 2 oldest turns" in note, note


def test_error_mid_stream_then_503_are_shown(fake_gateway: FakeGateway, browser) -> None:
    open_page(browser, fake_gateway)
    wait_for(lambda: js(browser, "return document.getElementById('model').value") == "fake")
    settings(browser, max_tokens="200")
    ask(browser, "A long answer, please.")
    wait_for(lambda: len(answer_text(browser)) >= 3, 30, message="some text")
    fake_gateway.engine.errored = True  # the engine dies mid-answer
    wait_idle(browser, 30)
    error = browser.find_element("css selector", "#messages .msg.assistant .error").text
    assert error.startswith("The answer was cut off by the server:"), error
    assert answer_text(browser), "the partial answer is kept"

    wait_for(lambda: httpx.get(fake_gateway.base_url + "/health").status_code == 503, 10)
    ask(browser, "Are you there?")
    wait_for(lambda: "(503)" in status_text(browser), 30, message="the 503 message")
    assert by_id(browser, "question").get_attribute("value") == "Are you there?"
    assert len(browser.find_elements("css selector", "#messages .msg")) == 2
