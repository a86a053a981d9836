"""The chat page in a real headless Chromium, through HAProxy, against the real stack.

Each test writes a screenshot per step to ``test-artifacts/web/<test name>/``.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, BrowserContext, Page, Request, Response, expect
from tcp_proxy import TcpProxy
from web_support import AXE, GATEWAYS_UP, Shots, WebStack

pytestmark = pytest.mark.timeout(180)

HEBREW_PROMPT = "שלום, מה שלומך?"  # the seed's prompt
PASSWORD = "a long test password 1"
expect.set_options(timeout=15_000)


async def _until(check: Any, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not await check():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.1)


class Tokens:
    """The last bearer token the page sent (read from its requests, as a network observer)."""

    def __init__(self, page: Page) -> None:
        self.last: str | None = None
        page.on("request", self._seen)

    def _seen(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        if header.startswith("Bearer "):
            self.last = header.removeprefix("Bearer ")


async def _new_page(browser: Browser, **options: Any) -> tuple[BrowserContext, Page]:
    context = await browser.new_context(**options)
    page = await context.new_page()
    return context, page


async def _register(page: Page, stack: WebStack, username: str) -> None:
    await page.goto(stack.url + "/")
    await page.get_by_role("button", name="Create an account").click()
    await page.locator("#register-username").fill(username)
    await page.locator("#register-email").fill(f"{username}@example.com")
    await page.locator("#register-organization").fill(f"Org {username}")
    await page.locator("#register-password").fill(PASSWORD)
    await page.get_by_role("button", name="Create account").click()
    await expect(page.locator("#chat-view")).to_be_visible()


async def _sign_in(page: Page, username: str) -> None:
    await page.locator("#signin-username").fill(username)
    await page.locator("#signin-password").fill(PASSWORD)
    await page.locator("#signin-password").press("Enter")
    await expect(page.locator("#chat-view")).to_be_visible()


async def _send(page: Page, prompt: str) -> None:
    await page.locator("#prompt").fill(prompt)
    await page.locator("#prompt").press("Enter")


def _last_answer(page: Page) -> Any:
    return page.locator("li.message.assistant").last


async def _axe(page: Page) -> list[dict[str, Any]]:
    """Serious and critical axe-core violations of the page as it is now."""
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        await page.evaluate(AXE.read_text())  # DevTools evaluation: not a script the CSP governs
    result = await page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]]}
        for v in result["violations"]
        if v["impact"] in {"serious", "critical"}
    ]


async def test_an_employee_chats_stops_reads_the_archive_and_signs_out(
    web_stack_factory: Any, browser: Browser, shots: Shots
) -> None:
    stack: WebStack = await web_stack_factory()
    async with aiohttp.ClientSession() as http, http.get(stack.url + "/") as response:
        assert response.status == 200
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe" not in csp and "trusted-types" in csp
        assert response.headers["X-Frame-Options"] == "DENY"

    context, page = await _new_page(browser, viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    tokens = Tokens(page)
    username = f"web_{uuid.uuid4().hex[:8]}"

    # Register, sign out, sign in again.
    await page.goto(stack.url + "/")
    await expect(page.locator("#signin-view")).to_be_visible()
    await shots.take(page, "signin")
    assert await _axe(page) == []
    await _register(page, stack, username)
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.locator("#signin-view")).to_be_visible()
    await _sign_in(page, username)
    await expect(page.locator("#whoami")).to_contain_text(username)
    models = await page.locator("#model option").all_inner_texts()
    assert set(models) == {"llama3.2", "qwen2.5"}
    await shots.take(page, "signed-in")

    # The keyboard: Shift+Enter is a new line, Enter sends.
    prompt = page.locator("#prompt")
    await prompt.fill("first line")
    await prompt.press("Shift+Enter")
    await prompt.press_sequentially("second line")
    assert await prompt.input_value() == "first line\nsecond line"
    await expect(page.locator("li.message")).to_have_count(0)
    await prompt.fill("")

    # The Hebrew prompt: tokens are on screen while the answer is still streaming.
    await _send(page, HEBREW_PROMPT)
    user_message = page.locator("li.message.user .body").last
    await expect(user_message).to_have_text(HEBREW_PROMPT)
    assert await user_message.evaluate("e => getComputedStyle(e).direction") == "rtl"
    answer = _last_answer(page)
    await expect(answer).to_have_attribute("data-state", "streaming")
    await _until(lambda: answer.evaluate("e => Number(e.dataset.tokens || 0) >= 3"))
    partial = await answer.locator(".body").inner_text()
    assert partial.strip(), "tokens must be rendered as they arrive"
    assert await answer.get_attribute("data-state") == "streaming", "the answer finished too soon to see"
    await expect(page.get_by_role("button", name="Stop")).to_be_visible()
    await shots.take(page, "streaming")
    await expect(answer).to_have_attribute("data-state", "done")
    final = await answer.locator(".body").inner_text()
    assert final.startswith(partial.strip()[:10]) and len(final) > len(partial)
    await shots.take(page, "answered")

    # Stop mid-answer: the generation is aborted at the model (the simulator counts it).
    before = await stack.simulator_stats()
    await _send(page, "Tell me a long story, please.")
    answer = _last_answer(page)
    await _until(lambda: answer.evaluate("e => Number(e.dataset.tokens || 0) >= 2"))
    await page.get_by_role("button", name="Stop").click()
    await expect(answer).to_have_attribute("data-state", "stopped")
    await expect(answer.locator(".note")).to_have_text("Stopped.")
    stopped_text = (await answer.locator(".body").inner_text()).strip()

    async def aborted() -> bool:
        stats = await stack.simulator_stats()
        return stats["generations_aborted"] > before["generations_aborted"]

    await _until(aborted)
    await expect(page.locator("#prompt")).to_be_enabled()
    await shots.take(page, "stopped")

    # Markdown, RTL and the controls pass the accessibility check with a conversation on screen.
    assert await _axe(page) == []

    # The session list, newest first, titled by its first prompt; end it, read it from the archive.
    await page.get_by_role("button", name="Refresh conversations").click()
    item = page.locator("li.session").first
    await expect(item.locator(".session-title")).to_have_text(HEBREW_PROMPT)
    await shots.take(page, "sessions")
    await item.get_by_role("button", name="End").click()

    async def archived() -> bool:
        await page.get_by_role("button", name="Refresh conversations").click()
        await page.wait_for_timeout(300)
        return await page.locator("li.session").first.get_attribute("data-state") == "archived"

    await _until(archived, timeout=30)
    await page.get_by_role("button", name="New chat").click()
    await expect(page.locator("li.message")).to_have_count(0)
    await page.locator("li.session .session-open").first.click()
    await expect(page.locator("#conversation")).to_have_attribute("data-session-state", "archived")
    await expect(page.locator("li.message.user .body").first).to_have_text(HEBREW_PROMPT)
    # Both exchanges; the stopped one as far as it got (the session records what the user saw).
    await expect(page.locator("li.message")).to_have_count(4)
    archived_stop = (await page.locator("li.message.assistant .body").last.inner_text()).strip()
    assert archived_stop.startswith(stopped_text[:12]), (archived_stop, stopped_text)
    await shots.take(page, "archived-session")

    # Phone width: the conversation fills the screen, the list is a drawer.
    await page.set_viewport_size({"width": 390, "height": 844})
    await expect(page.locator("#sidebar")).not_to_be_in_viewport()
    await shots.take(page, "phone")
    await page.get_by_role("button", name="Conversations", exact=True).click()
    await expect(page.locator("#sidebar")).to_be_in_viewport()
    await shots.take(page, "phone-drawer")
    await page.keyboard.press("Escape")
    await page.set_viewport_size({"width": 1280, "height": 800})

    # Delete it: gone from the list (and from the archive: the list is rebuilt from both).
    item = page.locator("li.session").first
    await item.get_by_role("button", name="Delete").click()
    await item.get_by_role("button", name="Delete").click()  # "Confirm"
    await expect(page.locator("li.session")).to_have_count(0)

    # Sign out: the page forgets its tokens and the access token is revoked on the server.
    token = tokens.last
    assert token
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.locator("#signin-view")).to_be_visible()
    assert await page.evaluate("sessionStorage.length") == 0
    assert await page.evaluate("localStorage.length") == 0
    async with (
        aiohttp.ClientSession() as http,
        http.get(stack.url + "/sessions", headers={"Authorization": f"Bearer {token}"}) as response,
    ):
        assert response.status == 401
    await shots.take(page, "signed-out")
    assert not [e for e in errors if "Content Security Policy" in e or "TrustedHTML" in e], errors
    await context.close()


XSS_ANSWER = "\n".join(
    [
        "Here is an image: <img src=x onerror=\"window.__pwned='img';alert('img')\">",
        "",
        "A [harmless looking link](javascript:window.__pwned='md-link';alert('md')) and",
        "<a href=\"javascript:window.__pwned='a';alert('a')\" id=\"rawlink\">a raw link</a>.",
        "",
        "<script>window.__pwned='script';alert('script')</script>",
        '<svg onload="window.__pwned=\'svg\'"><circle r="5"/></svg>',
        "<iframe src=\"javascript:alert('frame')\"></iframe>",
        "",
        "```python",
        'print("copied exactly")',
        "```",
        "",
    ]
)


async def test_model_output_is_sanitized_and_code_can_be_copied(
    web_stack_factory: Any, browser: Browser, shots: Shots
) -> None:
    stack: WebStack = await web_stack_factory()
    await stack.simulator_config(answer_text=XSS_ANSWER, tokens_per_second=200)
    context, page = await _new_page(browser)
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.url)
    dialogs: list[str] = []
    page.on(
        "dialog", lambda dialog: (dialogs.append(dialog.message), asyncio.ensure_future(dialog.dismiss()))
    )
    await _register(page, stack, f"xss_{uuid.uuid4().hex[:8]}")
    await _send(page, "Say something dangerous")
    answer = _last_answer(page)
    await expect(answer).to_have_attribute("data-state", "done")
    body = answer.locator(".body")
    await expect(body).to_contain_text("Here is an image")

    assert await body.locator("script, iframe, [onerror], [onload]").count() == 0
    hrefs = await body.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    assert not [h for h in hrefs if h and h.strip().lower().startswith("javascript")], hrefs
    for name in ("harmless looking link", "a raw link"):
        await body.get_by_text(name).click()
    await page.wait_for_timeout(500)
    assert await page.evaluate("window.__pwned") is None
    assert dialogs == []

    # Code blocks keep their text and copy it.
    await answer.get_by_role("button", name="Copy code").click()
    await expect(answer.get_by_role("button", name="Copy code")).to_have_text("Copied")
    assert await page.evaluate("navigator.clipboard.readText()") == 'print("copied exactly")\n'
    await shots.take(page, "sanitized")

    # Trusted Types are enforced: HTML from a plain string cannot be written into the page at all.
    outcome = await page.evaluate(
        "() => { try { document.body.innerHTML = '<b>x</b>'; return 'written' } catch (e) { return e.name } }"
    )
    assert outcome == "TypeError"
    await context.close()


async def test_clear_messages_for_limits_lost_connections_and_expired_sign_in(
    web_stack_factory: Any, browser: Browser, shots: Shots
) -> None:
    # Access tokens of 35 s: the page refreshes 30 s before expiry, so within this test.
    stack: WebStack = await web_stack_factory({"AUTH_ACCESS_TOKEN_TTL": "35"}, RATE_LIMIT_PER_MINUTE="2")
    context, page = await _new_page(browser)
    tokens = Tokens(page)
    refreshes: list[int] = []
    page.on("response", lambda r: refreshes.append(r.status) if r.url.endswith("/refresh") else None)
    await _register(page, stack, f"limits_{uuid.uuid4().hex[:8]}")

    # The access token is refreshed before it expires, and the page keeps working with the new one.
    async def refreshed() -> bool:
        return 200 in refreshes

    await _until(refreshed, timeout=20)

    # 429 after a lost connection (below): the time to wait is on screen.
    await _send(page, "one")
    await expect(_last_answer(page)).to_have_attribute("data-state", "done")
    await _send(page, "two")
    answer = _last_answer(page)
    await _until(lambda: answer.evaluate("e => Number(e.dataset.tokens || 0) >= 2"))

    # Network loss mid-answer: the front door goes away; the page says so and offers a retry.
    await stack.haproxy.stop()
    await expect(answer).to_have_attribute("data-state", "lost", timeout=20_000)
    await expect(page.locator("#notice")).to_contain_text("Connection lost")
    await expect(page.locator("#notice-action")).to_have_text("Retry")
    await shots.take(page, "connection-lost")
    await stack.haproxy.start(stack.haproxy_binary)
    await stack.haproxy.wait_status(GATEWAYS_UP)

    await page.locator("#notice-action").click()  # Retry: the third chat in the minute
    answer = _last_answer(page)
    await expect(answer).to_have_attribute("data-state", "error")
    await expect(page.locator("#notice")).to_contain_text(
        re.compile(r"Too many requests\. Please wait \d+ s")
    )
    await shots.take(page, "rate-limited")

    # Expired sign-in: the login is revoked behind the page's back; its next call says so.
    assert tokens.last
    bearer = {"Authorization": f"Bearer {tokens.last}"}
    async with aiohttp.ClientSession() as http, http.post(stack.url + "/logout", headers=bearer) as response:
        assert response.status == 204
    await page.get_by_role("button", name="Refresh conversations").click()
    await expect(page.locator("#signin-view")).to_be_visible()
    await expect(page.locator("#signin-error")).to_have_text(
        "Your sign-in has expired. Please sign in again."
    )
    await shots.take(page, "sign-in-expired")
    assert json.loads(await page.evaluate("JSON.stringify(Object.keys(sessionStorage))")) == []
    await context.close()


async def test_an_answer_cut_by_the_network_resumes_where_it_stopped(
    web_stack_factory: Any, browser: Browser, shots: Shots
) -> None:
    stack: WebStack = await web_stack_factory()
    # The browser's network: a link to the front door that the test cuts and restores.
    link = TcpProxy("127.0.0.1", int(stack.haproxy.env["HTTP_PORT"]))
    await link.start()
    try:
        context, page = await _new_page(browser)
        tokens = Tokens(page)
        resumes: list[str | None] = []
        page.on(
            "request",
            lambda r: resumes.append(r.headers.get("last-event-id")) if r.url.endswith("/events") else None,
        )
        await page.goto(f"http://127.0.0.1:{link.port}/")
        await page.get_by_role("button", name="Create an account").click()
        username = f"cut_{uuid.uuid4().hex[:8]}"
        await page.locator("#register-username").fill(username)
        await page.locator("#register-email").fill(f"{username}@example.com")
        await page.locator("#register-organization").fill(f"Org {username}")
        await page.locator("#register-password").fill(PASSWORD)
        await page.get_by_role("button", name="Create account").click()
        await expect(page.locator("#chat-view")).to_be_visible()

        await _send(page, HEBREW_PROMPT)
        answer = _last_answer(page)
        await _until(lambda: answer.evaluate("e => Number(e.dataset.tokens || 0) >= 4"))
        await link.cut()  # every connection reset mid-answer
        await asyncio.sleep(0.3)
        await link.restore()
        await expect(answer).to_have_attribute("data-state", "done", timeout=20_000)
        await shots.take(page, "resumed")
        assert resumes and resumes[0] is not None and int(resumes[0]) >= 3, resumes  # from where it was
        shown = (await answer.locator(".body").inner_text()).strip()

        # Exactly the answer the session recorded: nothing lost, nothing repeated.
        session_id = await page.evaluate(
            "document.querySelector('li.session[aria-current=\"true\"]')?.dataset.sessionId"
        )
        assert session_id and tokens.last
        bearer = {"Authorization": f"Bearer {tokens.last}"}
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{stack.url}/sessions/{session_id}", headers=bearer) as response,
        ):
            turns = (await response.json())["turns"]
        assert turns[-1]["role"] == "assistant"
        assert shown == turns[-1]["content"].strip()
        stats = await stack.simulator_stats()
        assert stats["generations_started"] == 1, stats  # resumed, not generated again
        await context.close()
    finally:
        await link.close()


async def test_a_full_request_queue_says_busy_retries_and_recovers(
    web_stack_factory: Any, browser: Browser, shots: Shots
) -> None:
    # A real 503 from the platform: the request queue is full (REQUEST_QUEUE_MAX_LENGTH, RabbitMQ's
    # reject-publish) because no worker consumes it; the gateway answers 503 queue_full with
    # Retry-After. A worker that comes back drains the queue and the page's own retry gets through.
    stack: WebStack = await web_stack_factory(common_env={"REQUEST_QUEUE_MAX_LENGTH": "2"})
    context, page = await _new_page(browser)
    tokens = Tokens(page)
    busy: list[Response] = []
    page.on("response", lambda r: busy.append(r) if r.url.endswith("/chat") and r.status == 503 else None)
    await _register(page, stack, f"busy_{uuid.uuid4().hex[:8]}")
    assert tokens.last

    await stack.stop_worker()
    queued: list[aiohttp.ClientResponse] = []
    async with aiohttp.ClientSession() as http:
        bearer = {"Authorization": f"Bearer {tokens.last}"}
        for i in range(6):  # quorum queues may take one more than their limit
            body = {"session_id": str(uuid.uuid4()), "prompt": f"waiting {i}", "stream": True}
            response = await http.post(stack.url + "/chat", json=body, headers=bearer)
            if response.status == 503:
                assert (await response.json())["error"] == "queue_full"
                response.release()
                break
            assert response.status == 200, await response.text()
            queued.append(response)
        else:
            raise AssertionError("the request queue never filled up")

        await _send(page, "Are you there?")
        answer = _last_answer(page)
        await expect(page.locator("#notice")).to_contain_text(re.compile(r"busy; retrying in \d s"))
        await expect(answer.locator(".note")).to_have_text("Busy; retrying…")
        await shots.take(page, "busy-retrying")
        assert busy, "the page saw no 503"
        first = busy[0]
        assert (await first.json())["error"] == "queue_full"
        assert int(await first.header_value("retry-after") or 0) >= 1

        await stack.start_worker()
        await expect(answer).to_have_attribute("data-state", "done", timeout=30_000)
        await expect(page.locator("#notice")).to_be_hidden()
        assert (await answer.locator(".body").inner_text()).strip()
        await shots.take(page, "recovered")

        # The requests that waited in the queue were answered too: nothing was lost.
        for response in queued:
            raw = await response.text()
            assert "event: done" in raw, raw[-300:]
    await context.close()


async def test_an_email_that_may_not_join_is_told_why(
    web_stack_factory: Any, browser: Browser, shots: Shots
) -> None:
    # Sign-up closed (the production default): only invited people or an allowed domain may join.
    stack: WebStack = await web_stack_factory({"AUTH_OPEN_SIGNUP": "false"})
    context, page = await _new_page(browser)
    refusals: list[Response] = []
    page.on("response", lambda r: refusals.append(r) if r.url.endswith("/register") else None)
    username = f"closed_{uuid.uuid4().hex[:8]}"
    await page.goto(stack.url + "/")
    await page.get_by_role("button", name="Create an account").click()
    await page.locator("#register-username").fill(username)
    await page.locator("#register-email").fill(f"{username}@gmail.example")
    await page.locator("#register-organization").fill("Acme")
    await page.locator("#register-password").fill(PASSWORD)
    await page.locator("#register-password").press("Enter")
    error = page.locator("#register-error")
    await expect(error).to_have_text(
        "This email address cannot join here. Sign-up is open only to addresses of domains an "
        "organization allows, or with an invitation: ask your administrator for one."
    )
    assert await error.get_attribute("role") == "alert"
    assert [r.status for r in refusals] == [403]
    assert (await refusals[0].json())["error"] == "registration_closed"
    await expect(page.locator("#chat-view")).to_be_hidden()
    await expect(page.locator("#register-form")).to_be_visible()
    await shots.take(page, "registration-closed")
    assert await _axe(page) == []
    await context.close()


async def test_personal_api_keys_are_created_shown_once_used_and_revoked(
    web_stack_factory: Any, browser: Browser, shots: Shots
) -> None:
    stack: WebStack = await web_stack_factory()
    context, page = await _new_page(browser, viewport={"width": 1280, "height": 800})
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.url)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await _register(page, stack, f"keys_{uuid.uuid4().hex[:8]}")

    # Open the panel from the keyboard: focus lands in the form.
    opener = page.get_by_role("button", name="API keys")
    await opener.focus()
    await page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="API keys")
    await expect(dialog).to_be_visible()
    await expect(page.locator("#keys-empty")).to_be_visible()
    await expect(page.locator("#key-name")).to_be_focused()
    await shots.take(page, "panel")
    assert await _axe(page) == []

    # Create one with an expiry, the keyboard alone: type the name, Tab to the expiry, Enter.
    await page.keyboard.type("reporting script")
    await page.keyboard.press("Tab")
    await expect(page.locator("#key-expiry")).to_be_focused()
    await page.locator("#key-expiry").select_option("604800")  # 7 days
    await page.locator("#key-name").press("Enter")
    secret_box = dialog.get_by_role("textbox", name="The new API key")
    await expect(secret_box).to_be_visible()
    await expect(dialog).to_contain_text("Copy it now: you will not see it again.")
    secret = await secret_box.input_value()
    assert re.fullmatch(r"ekey_[A-Za-z0-9]{12}[A-Za-z0-9_-]{43}", secret), secret
    await dialog.get_by_role("button", name="Copy", exact=True).click()
    await expect(page.locator("#key-copy-status")).to_have_text("Copied to the clipboard.")
    assert await page.evaluate("navigator.clipboard.readText()") == secret
    item = page.locator("li.key").first
    await expect(item.locator(".key-name")).to_have_text("reporting script")
    await expect(item).to_have_attribute("data-state", "active")
    facts = await item.locator(".key-facts").inner_text()
    assert secret[:17] in facts and secret not in facts  # the prefix only
    assert "chat, models" in facts and "Never" in facts  # scopes; not used yet
    expires = await item.locator(".key-facts dd").nth(3).inner_text()
    assert expires != "Never"
    await shots.take(page, "key-created-shown-once")
    assert await _axe(page) == []

    # The key works for a real API call through the front door.
    bearer = {"Authorization": f"Bearer {secret}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(stack.url + "/v1/models", headers=bearer) as response:
            assert response.status == 200, await response.text()
            assert "llama3.2" in {model["id"] for model in (await response.json())["data"]}

        # Done: the secret is gone from the page; reopened, the panel shows the prefix only.
        await dialog.get_by_role("button", name="Done, I have stored it").click()
        await expect(page.locator("#key-secret")).to_be_hidden()
        assert await page.locator("#key-secret-value").input_value() == ""
        await page.keyboard.press("Escape")
        await expect(dialog).to_be_hidden()
        await expect(opener).to_be_focused()
        await opener.click()
        await expect(page.locator("li.key")).to_have_count(1)
        await expect(page.locator("#key-secret")).to_be_hidden()
        assert secret not in await page.evaluate("document.body.innerText + document.body.innerHTML")
        await expect(page.locator("li.key .key-facts dd").nth(4)).not_to_have_text("Never")  # last used

        # Revoke: a confirmation first; Cancel keeps the key.
        item = page.locator("li.key").first
        await item.get_by_role("button", name="Revoke").click()
        await expect(item.get_by_role("group")).to_contain_text("Revoke “reporting script”?")
        await expect(item.get_by_role("button", name="Cancel")).to_be_focused()
        await page.keyboard.press("Enter")  # Cancel
        await expect(item).to_have_attribute("data-state", "active")
        await item.get_by_role("button", name="Revoke").click()
        await shots.take(page, "revoke-confirmation")
        await item.get_by_role("button", name="Yes, revoke").click()
        await expect(page.locator("li.key").first).to_have_attribute("data-state", "revoked")
        await expect(page.locator("#keys-status")).to_have_text("Key “reporting script” revoked.")
        await expect(page.locator("li.key").first.get_by_role("button", name="Revoke")).to_have_count(0)
        await shots.take(page, "key-revoked")

        # The same call is refused now, on whichever gateway answers.
        for _ in range(4):
            async with http.get(stack.url + "/v1/models", headers=bearer) as response:
                assert response.status == 401, await response.text()

    # Phone width: the panel fits the screen, nothing scrolls sideways.
    await page.set_viewport_size({"width": 390, "height": 844})
    await expect(dialog).to_be_in_viewport()
    assert await dialog.evaluate("e => e.scrollWidth <= e.clientWidth")
    await shots.take(page, "phone-panel")
    await page.keyboard.press("Escape")
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    heights = await page.locator(".topbar button").evaluate_all("bs => bs.map(b => b.offsetHeight)")
    assert max(heights) < 48, heights  # every top-bar button on one line
    await shots.take(page, "phone-topbar")
    assert not errors, errors
    await context.close()
