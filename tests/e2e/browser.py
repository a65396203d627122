"""Headless Chromium driven by Selenium, with the waits and selectors the Prefect UI needs.

The Prefect UI (v1, Vue) renders a flow's parameter schema as nested ``schema-form-property``
blocks: a ``span.schema-form-property__label`` such as "Epochs (Optional)" above a fieldset
holding the input. Selectors here use that visible text, never generated ids.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 60


def missing_browser() -> str | None:
    """Why the browser test cannot run here, or None when it can."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists() and not shutil.which(Path(path).name):
            return f"{path} not found: run `make e2e` (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed: pip install -e '.[e2e]'"
    return None


def _literal(text: str) -> str:
    """``text`` as an XPath string literal (the texts used here hold no double quote)."""
    return f'"{text}"'


class Browser:
    """One headless Chromium window that saves a numbered screenshot per step."""

    def __init__(self, out: Path) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        for arg in (
            "--headless=new",
            # Containers run as root without user namespaces: the sandbox cannot start there.
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--window-size=1400,1000",
        ):
            options.add_argument(arg)
        options.binary_location = shutil.which("chromium") or CHROMIUM
        service = Service(shutil.which("chromedriver") or CHROMEDRIVER)
        self.driver = webdriver.Chrome(service=service, options=options)
        self.out = out
        self.out.mkdir(parents=True, exist_ok=True)
        self.shots: list[Path] = []

    def close(self) -> None:
        self.driver.quit()

    def shot(self, name: str) -> Path:
        path = self.out / f"{len(self.shots) + 1:02d}-{name}.png"
        self.driver.save_screenshot(str(path))
        self.shots.append(path)
        return path

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Run one step; screenshot it, or on failure save the screenshot and the page source."""
        try:
            yield
        except BaseException:
            self.driver.save_screenshot(str(self.out / f"FAILED-{name}.png"))
            (self.out / f"FAILED-{name}.html").write_text(self.driver.page_source)
            raise
        self.shot(name)

    def wait(self, timeout: float = WAIT_S):
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout, poll_frequency=0.25)

    def clickable(self, xpath: str, timeout: float = WAIT_S):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        return self.wait(timeout).until(ec.element_to_be_clickable((By.XPATH, xpath)))

    def visible(self, xpath: str, timeout: float = WAIT_S):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        return self.wait(timeout).until(ec.visibility_of_element_located((By.XPATH, xpath)))

    def click_text(self, text: str, tag: str = "*", timeout: float = WAIT_S) -> None:
        """Click the innermost ``tag`` element whose visible text is exactly ``text``."""
        same = f"normalize-space()={_literal(text)}"
        xpath = f"//{tag}[{same}][not(.//{tag}[{same}])]"
        element = self.clickable(xpath, timeout)
        self.scroll_to(element)
        element.click()

    def scroll_to(self, element, block: str = "center") -> None:
        self.driver.execute_script(f"arguments[0].scrollIntoView({{block: '{block}'}});", element)

    def form_field(self, label: str, control: str = "input"):
        """The ``control`` (input, textarea, select) of the innermost form property ``label``."""
        xpath = (
            f"//span[contains(@class, 'schema-form-property__label')]"
            f"[normalize-space()={_literal(label)}]"
            "/ancestor::div[contains(concat(' ', @class, ' '), ' schema-form-property ')][1]"
            f"//fieldset[1]//{control}"
        )
        element = self.visible(xpath)
        self.scroll_to(element)
        return element

    def fill(self, label: str, value: str, control: str = "input") -> None:
        """Replace the value of form property ``label`` by typing, as a user would."""
        from selenium.webdriver.common.keys import Keys

        element = self.form_field(label, control)
        element.click()
        element.send_keys(Keys.CONTROL, "a")
        element.send_keys(Keys.DELETE)
        element.send_keys(value)
        self.wait(10).until(lambda _: element.get_attribute("value") == value)

    def text(self) -> str:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.TAG_NAME, "body").text
