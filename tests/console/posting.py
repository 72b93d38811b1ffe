"""Posting a console form in the browser and waiting for the page it leads to.

Waiting for ``#main`` alone would find the *old* page's; waiting for a URL fails when the new URL
equals the old one (the same notice twice). So: remember the old document, click, wait until it is
gone, then for the new page's ``<main>``. Chromium reports a vanished node either as a stale element
or as "Node with given id does not belong to the document": both mean gone.
"""

from __future__ import annotations

from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.console.conftest import wait_for


def click_and_wait(driver: WebDriver, css: str) -> None:
    """Click the element at ``css`` (a submit button, a link) and wait for the next page."""
    old = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.CSS_SELECTOR, css).click()

    def gone(_: WebDriver) -> bool:
        try:
            old.is_enabled()
        except WebDriverException:  # stale, or no longer in the document
            return True
        return False

    wait_for(driver, gone, f"the page after clicking {css}")
    wait_for(driver, lambda d: d.find_elements(By.ID, "main"), f"the page after clicking {css}")


def text_of(driver: WebDriver, by: str, selector: str) -> str:
    """An element's text; "" while the browser is between two pages (for waiting conditions)."""
    try:
        return str(driver.find_element(by, selector).text)
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def main_text(driver: WebDriver) -> str:
    return text_of(driver, By.ID, "main")


def submit_form(driver: WebDriver, form_action: str) -> None:
    driver.find_element(By.CSS_SELECTOR, f"form[action='{form_action}'] button[type=submit]").click()
