"""The pipeline's parameter form in the real Prefect UI: optional fields, defaults, submission.

A real ``prefect server start`` (127.0.0.1, own PREFECT_HOME) holds one deployment of the
pipeline flow, registered through the REST API with the flow's parameter schema and the default
config's ``form_values`` as its parameters (no serving process is needed to render a form). Headless
Chromium opens its custom-run form and checks what a user sees: no field reads
``Property is type "None"``, fields left to the PDE's own show empty inputs, fields with a
default show it, and the untouched form submits a run whose parameters are a valid config.
Skipped where Chromium, chromedriver or selenium are missing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.e2e.browser import Browser, missing_browser
from tests.e2e.prefect_server import api, prefect_server

REASON = missing_browser()
# Fields typed ``X | None = None``: they read 'Property is type "None"' before form_schema.
NULLABLE_SCALARS = (
    "Preset (Optional)",
    "N X (Optional)",
    "Parameters (Optional)",
    "Address (Optional)",
)
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    if os.environ.get("E2E_OUT"):
        return Path(os.environ["E2E_OUT"]).resolve() / "form"
    return tmp_path_factory.mktemp("e2e-form")


def _register(url: str) -> tuple[str, dict]:
    """A deployment of the pipeline flow with serve's schema and defaults; (id, parameters)."""
    from prefect.utilities.callables import parameter_schema

    from pdeflow.flows.pipeline import pipeline
    from pdeflow.tasks.config import PipelineConfig
    from pdeflow.tasks.config_form import form_values

    flow_id = api(url, "/flows/", {"name": "pipeline"})["id"]
    params = {"config": form_values(PipelineConfig())}
    body = {
        "name": "form-probe",
        "flow_id": flow_id,
        "parameters": params,
        "parameter_openapi_schema": parameter_schema(pipeline).model_dump(),
        "enforce_parameter_schema": True,
    }
    return api(url, "/deployments/", body)["id"], params


def _property_text(browser: Browser, label: str) -> str:
    """Visible text of the innermost form property labelled ``label``."""
    xpath = (
        f"//span[contains(@class, 'schema-form-property__label')][normalize-space()='{label}']"
        "/ancestor::div[contains(concat(' ', @class, ' '), ' schema-form-property ')][1]"
    )
    return browser.visible(xpath).text


def _runs_of(url: str, deployment_id: str) -> list[dict]:
    body = {"flow_runs": {"deployment_id": {"any_": [deployment_id]}}}
    return api(url, "/flow_runs/filter", body)


def test_form_shows_optional_fields_and_defaults_and_submits(tmp_path, out_dir):
    from pdeflow.tasks.config import PipelineConfig

    browser = Browser(out_dir)
    try:
        with prefect_server(tmp_path / "prefect") as url:
            deployment_id, params = _register(url)
            driver = browser.driver
            with browser.step("custom-run-form"):
                driver.get(f"{url}/deployments/deployment/{deployment_id}/run")
                browser.form_field("N Samples (Optional)")
                text = browser.text()
                # Optional scalars of every section, nested cluster settings included, are
                # inputs. Only the optional nested model (simulator) keeps Prefect's None tab.
                for label in NULLABLE_SCALARS:
                    assert 'Property is type "None"' not in _property_text(browser, label), label
                assert text.count('Property is type "None"') <= 1
                # A default is shown as the input's value, not left blank.
                assert browser.form_field("N Samples (Optional)").get_attribute("value") == "512"
                assert browser.form_field("Block Size (Optional)").get_attribute("value") == "64"
                # A field that defaults to the PDE's own is an empty input saying so.
                assert browser.form_field("N X (Optional)").get_attribute("value") == ""
                assert "default: the PDE's own" in text
            with browser.step("run-submitted"):
                browser.click_text("Submit", tag="button")
                deadline = time.monotonic() + 60
                while not (runs := _runs_of(url, deployment_id)):
                    assert time.monotonic() < deadline, "the form submitted no run"
                    time.sleep(0.5)
            (run,) = runs
            submitted = PipelineConfig.model_validate(run["parameters"]["config"])
            assert submitted == PipelineConfig.model_validate(params["config"])
    finally:
        browser.close()
