"""The chat page in a real browser: headless Chromium (Debian's chromium and chromium-driver, installed by
`tools/setup.sh --tests`) driven by Selenium, against `inflight serve`.

Usage: chat_browser_test.py PATH_TO_INFLIGHT SCREENSHOT_PATH

Loads /, asks a question and watches the answer stream in (the end line gives the reason, the tokens and
tokens/s), checks on a screenshot that the answer's text is really drawn (dark pixels inside the answer's
box), uses the settings (max tokens and temperature reach the server), presses Stop on a long answer (it
ends as "abort" and the server's KV blocks all come back), starts a new chat, runs two conversations in two
tabs at once, reloads in the middle of an answer (nothing left running), shows model output and user text
as text (no HTML is ever run), and shows a clear message when the server needs an API key (page opened
without it; with /?api_key=KEY it works) and when the server is gone. The last screenshot is left at
SCREENSHOT_PATH. Exits 77 (ctest: skipped) with a message when Chromium or its driver is not installed.
"""
import os
import re
import sys
import time
import urllib.request

from inflight_server import InflightServer

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
LONG_QUESTION = "Write a very long story about a dragon who learns to bake bread."
END_LINE = re.compile(r"^(stop|length|abort), (\d+) tokens(, [0-9.]+ tokens/s)?$")


def skip(reason):
    print(f"SKIPPED: {reason}")
    sys.exit(77)


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1000,1000", "--force-device-scale-factor=1", "--lang=en-US"):
        options.add_argument(flag)
    # The driver is Debian's: Selenium must not try to download one (nothing outside loopback is reachable).
    return webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)


def wait_until(condition, what, seconds=60, driver=None):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    page = f"; the page's log: {driver.find_element('id', 'log').text!r}" if driver else ""
    raise AssertionError(f"timed out after {seconds} s waiting for {what}{page}")


def texts(driver, cls):
    return [element.text for element in driver.find_elements("css selector", f"#log .{cls}")]


def ask(driver, question):
    box = driver.find_element("id", "prompt")
    box.clear()
    box.send_keys(question)
    box.send_keys("\n")  # Enter sends


def set_setting(driver, element_id, value):
    """Types a value into a field of the Settings panel, opening the panel first as a user would."""
    if driver.find_element("id", "settings-panel").get_attribute("open") is None:
        driver.find_element("css selector", "#settings-panel summary").click()
    field = driver.find_element("id", element_id)
    field.clear()
    field.send_keys(value)


def server_idle(port):
    """The server's KV blocks all free and nothing running (its /metrics snapshot refreshes every second)."""
    def idle():
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        return ("\ninflight_kv_blocks_used 0\n" in metrics and "\ninflight_num_requests_running 0\n" in metrics)
    return wait_until(idle, "no KV block in use and nothing running", seconds=30)


def text_is_drawn(driver, element, path):
    """The element has a size and, on a screenshot, dark pixels inside its box: text that is really drawn."""
    from PIL import Image
    rect = element.rect
    assert rect["width"] > 50 and rect["height"] > 5, f"the answer has no size: {rect}"
    driver.save_screenshot(path)
    image = Image.open(path).convert("L")
    box = image.crop((int(rect["x"]), int(rect["y"]), int(rect["x"] + rect["width"]), int(rect["y"] + rect["height"])))
    dark = sum(1 for value in box.getdata() if value < 128)
    assert dark > 30, f"the answer's box is blank on the screenshot ({dark} dark pixels, rect {rect})"
    return dark


def main():
    inflight, screenshot = sys.argv[1], sys.argv[2]
    if not (os.access(CHROMIUM, os.X_OK) and os.access(DRIVER, os.X_OK)):
        skip("Chromium or chromedriver is not installed (bash tools/setup.sh --tests installs them)")
    try:
        import selenium  # noqa: F401
        import PIL  # noqa: F401
    except ImportError as error:
        skip(f"{error.name} is not in the e2e virtualenv (ctest's e2e/virtualenv installs it)")

    server = InflightServer(inflight, "--threads", "1")
    driver = browser()
    try:
        base = f"http://127.0.0.1:{server.port}"
        driver.get(base + "/")
        assert driver.title == "inflight", driver.title
        for element_id in ("log", "prompt", "send", "stop", "new-chat"):
            element = driver.find_element("id", element_id)
            assert element.is_displayed() and element.rect["width"] > 0, element_id

        # 1. A question: the answer streams in, then the end line gives reason, tokens and tokens/s.
        ask(driver, "Say hello in one word.")
        wait_until(lambda: len(texts(driver, "meta")) == 1, "the first answer to end", driver=driver)
        assert texts(driver, "user") == ["Say hello in one word."], texts(driver, "user")
        answer = driver.find_elements("css selector", "#log .assistant")[0]
        assert answer.text.strip(), "the answer is empty"
        end = END_LINE.match(texts(driver, "meta")[0])
        assert end and end.group(1) in ("stop", "length"), texts(driver, "meta")
        if int(end.group(2)) > 1:
            assert end.group(3), f"no tokens/s on a {end.group(2)}-token answer: {texts(driver, 'meta')}"
        assert driver.find_element("id", "send").is_enabled() and not driver.find_element("id", "stop").is_enabled()
        dark = text_is_drawn(driver, answer, screenshot)
        print(f"first answer: {answer.text!r}, {texts(driver, 'meta')[0]}, {dark} dark pixels")

        # 2. The settings reach the server: max tokens 3 at temperature 0 ends as length after 3 tokens.
        set_setting(driver, "max-tokens", "3")
        set_setting(driver, "temperature", "0")
        ask(driver, "Count from one to twenty.")
        wait_until(lambda: len(texts(driver, "meta")) == 2, "the short answer to end", driver=driver)
        assert re.match(r"^length, 3 tokens", texts(driver, "meta")[1]), texts(driver, "meta")

        # 3. Stop on a long answer: it ends as abort before max tokens, and the server frees its blocks.
        set_setting(driver, "max-tokens", "2000")
        ask(driver, LONG_QUESTION)
        wait_until(lambda: len(texts(driver, "assistant")) == 3 and len(texts(driver, "assistant")[2]) > 20,
                   "the long answer to stream", driver=driver)
        assert not driver.find_element("id", "send").is_enabled()  # while answering
        driver.find_element("id", "stop").click()
        wait_until(lambda: len(texts(driver, "meta")) == 3, "the stopped answer to end", seconds=30, driver=driver)
        stopped = END_LINE.match(texts(driver, "meta")[2])
        assert stopped and stopped.group(1) == "abort" and int(stopped.group(2)) < 2000, texts(driver, "meta")
        server_idle(server.port)

        # 4. What the user and the model write is shown as text.
        set_setting(driver, "max-tokens", "24")
        ask(driver, "<b id='injected'>bold</b> <img src=x onerror=\"document.title='pwned'\">")
        wait_until(lambda: len(texts(driver, "meta")) == 4, "the fourth answer to end", driver=driver)
        assert not driver.find_elements("id", "injected") and driver.title == "inflight"
        assert not driver.find_elements("css selector", "#log img, #log b")

        # 5. New chat: the log and the conversation are cleared.
        driver.find_element("id", "new-chat").click()
        assert texts(driver, "user") == [] and texts(driver, "assistant") == []

        # 6. Two conversations in two tabs at once, both answered.
        first_tab = driver.current_window_handle
        driver.switch_to.new_window("tab")
        second_tab = driver.current_window_handle
        driver.get(base + "/")
        for tab, question in ((first_tab, "Name a colour."), (second_tab, "Name a fruit.")):
            driver.switch_to.window(tab)
            set_setting(driver, "max-tokens", "24")
            ask(driver, question)
        for tab in (first_tab, second_tab):
            driver.switch_to.window(tab)
            wait_until(lambda: len(texts(driver, "meta")) == 1, "both tabs' answers to end", driver=driver)
            assert texts(driver, "assistant")[0].strip(), "a tab's answer is empty"
        driver.close()
        driver.switch_to.window(first_tab)

        # 7. A reload in the middle of an answer: the closed socket cancels it; nothing is left running.
        driver.find_element("id", "new-chat").click()
        set_setting(driver, "max-tokens", "2000")
        ask(driver, LONG_QUESTION)
        wait_until(lambda: len(texts(driver, "assistant")) == 1 and len(texts(driver, "assistant")[0]) > 20,
                   "the answer to stream before the reload", driver=driver)
        assert not texts(driver, "meta"), "the answer ended before the reload"
        driver.refresh()
        assert texts(driver, "assistant") == []
        server_idle(server.port)

        # 8. The server is gone: the page says so.
        server.stop()  # asserts a clean exit
        server = None
        ask(driver, "Are you there?")
        wait_until(lambda: texts(driver, "error"), "the error line", driver=driver)
        assert "cannot reach the server" in texts(driver, "error")[0], texts(driver, "error")

        # 9. A server with an API key: the page without it says how to open it; with /?api_key=KEY it works.
        server = InflightServer(inflight, "--threads", "1", "--api-key", "browser-test-key")
        base = f"http://127.0.0.1:{server.port}"
        driver.get(base + "/")
        ask(driver, "Hello?")
        wait_until(lambda: texts(driver, "error"), "the API key error line", driver=driver)
        assert "needs an API key" in texts(driver, "error")[0] and "/?api_key=" in texts(driver, "error")[0], \
            texts(driver, "error")
        driver.get(base + "/?api_key=browser-test-key")
        set_setting(driver, "max-tokens", "40")
        ask(driver, "What is the capital of France?")
        wait_until(lambda: len(texts(driver, "meta")) == 1, "the answer with the API key", driver=driver)
        assert not texts(driver, "error") and texts(driver, "assistant")[0].strip()
        text_is_drawn(driver, driver.find_elements("css selector", "#log .assistant")[0], screenshot)
        print(f"chat page in Chromium: all checks passed; screenshot at {screenshot}")
    finally:
        driver.quit()
        if server:
            server.stop()


if __name__ == "__main__":
    main()
