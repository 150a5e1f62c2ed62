"""The dashboard in a real headless browser (Debian's Chromium, via Selenium):
it goes live, shows an alert while an actor is backed up, and clears it when
the actor drains. Skipped only when Chromium or its driver is not installed."""

from __future__ import annotations

import asyncio

import pytest

from bench.browser import headless_driver, missing
from tests.actors.test_monitor import Blocker

pytestmark = [
    pytest.mark.skipif(missing() is not None, reason=f"headless Chromium: {missing()}"),
    pytest.mark.timeout(90),
]


async def browser_wait(check, timeout: float = 15.0):
    """Poll ``check`` (it talks to the browser, so it runs in a thread: the
    node shares this event loop) until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await asyncio.to_thread(check)
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"the page did not get there within {timeout}s")
        await asyncio.sleep(0.1)


@pytest.mark.node_config(monitor_interval=0.1, dashboard_push=0.2, alert_actor_high=50,
                         alert_actor_low=5, alert_sustain=0.3, node_name="browser-test")
async def test_dashboard_shows_an_alert_come_and_go(node):
    from selenium.webdriver.common.by import By
    driver = await asyncio.to_thread(headless_driver)
    try:
        text = lambda element_id: driver.find_element(By.ID, element_id).text   # noqa: E731
        # Step 1: the page loads, its websocket goes live, charts are drawn, no alert.
        await asyncio.to_thread(driver.get, f"http://127.0.0.1:{node.system.env['http_port']}/")
        await browser_wait(lambda: text("conn") == "live")
        await browser_wait(lambda: "browser-test" in text("node-name"))
        assert text("alerts-title") == "No active alerts"
        assert driver.find_elements(By.CSS_SELECTOR, "#chart-rates canvas")
        assert "QueueMonitor" in text("kinds")
        assert not driver.find_element(By.ID, "cluster-panel").is_displayed()   # standalone
        # Step 2: an actor backs up past the high-water mark: a red banner names it.
        gate = asyncio.Event()
        blocker = await node.system.spawn(Blocker, gate)
        for i in range(300):
            blocker.cast(i)
        await browser_wait(lambda: text("alerts-title") == "1 active alert")
        banner = driver.find_element(By.ID, "alerts")
        assert "active" in banner.get_attribute("class").split()
        assert f"actor {blocker!r} queue 299 >= 50" in text("alerts-list")
        assert repr(blocker) in text("top") and "299" in text("t-maxq")
        # Step 3: it drains: the banner clears and the history shows both transitions.
        gate.set()
        await browser_wait(lambda: text("alerts-title") == "No active alerts")
        history = text("alert-events")
        assert "raised: actor" in history and "cleared" in history
    finally:
        await asyncio.to_thread(driver.quit)
