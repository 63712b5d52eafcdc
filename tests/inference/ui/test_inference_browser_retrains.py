"""Issue 30 in the browser: the app keeps serving the better version while the gate's
candidate waits; the Models tab says why (both accuracies), the Training tab lists the
retrains (why each started, how each ended); a person's promotion is served and shown."""

from __future__ import annotations

import shutil

import pytest

from tests.inference.inference_helpers import V1, V2, serve_app
from tests.inference.modelkit import MODEL_NAME, publish_version, write_progress
from tests.inference.ui.test_inference_browser import (  # noqa: F401 (a fixture)
    CHROMIUM,
    SHOTS,
    browser_page,
)
from trainer.contract.layout import ModelKeys
from trainer.contract.lifecycle.promotion import CANDIDATE, PROMOTED, Promotion
from trainer.contract.lifecycle.retrain import FINISHED, SKIPPED, RetrainRecord, RetrainTrigger
from trainer.promote import promote

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's Chromium is missing"),
]

REPORT = f"metrics/{MODEL_NAME}/monitoring/reports/{V1}/20261124T090000000000Z-app-0.json"
DRIFT = RetrainTrigger("20261124T093000Z-a1b2c3", "drift", REPORT)


def retrain_record(store, trigger: RetrainTrigger, state: str, message: str,
                   requested_at: str) -> None:
    record = RetrainRecord(id=trigger.id, name=MODEL_NAME, reason=trigger.reason, state=state,
                           requested_at=requested_at, updated_at=requested_at,
                           job="trainstack-retrain-29000000", report=trigger.report,
                           message=message, training_job="retrain-colournet-colours-1a2b3c4d")
    store.put_bytes(ModelKeys(MODEL_NAME).retrain(trigger.id), record.to_json())


def test_a_candidate_waits_and_the_retrains_say_why(local_store, tmp_path, request):
    page = request.getfixturevalue("browser_page")
    publish_version(local_store, V1, run_id="firstrun", promotion=Promotion(
        PROMOTED, f"the first version of {MODEL_NAME}: nothing to beat", candidate_acc=0.97,
        split="sha256:colours"))
    reason = (f"81.00% against 97.00% of {V1} (on the same test split): below it by more "
              "than the tolerance of 1 percentage points")
    publish_version(local_store, V2, run_id="retrainrun", test_acc=0.81, retrain=DRIFT,
                    promotion=Promotion(CANDIDATE, reason, against=V1, candidate_acc=0.81,
                                        current_acc=0.97, split="sha256:colours"))
    write_progress(local_store, "retrainrun", epoch=4, epochs=4, state="published",
                   version=V2, retrain=DRIFT)
    retrain_record(local_store, DRIFT, FINISHED, "PyTorchJob succeeded",
                   "2026-11-24T09:30:00Z")
    person = RetrainTrigger("20261124T094500Z-d4e5f6", "person")
    retrain_record(local_store, person, SKIPPED, f"retrain {DRIFT.id} is training: this one "
                   "trains nothing", "2026-11-24T09:45:00Z")

    with serve_app(local_store.url, tmp_path / "cache") as (base, app):
        app.state.progress.refresh_seconds = 0
        page.goto(base + "/")
        page.locator("#model-status").get_by_text(V1).wait_for()  # not the candidate

        page.get_by_role("tab", name="Training").click()
        retrains = page.locator("#retrains")
        retrains.get_by_text("drift (report 20261124T090000000000Z-app-0)").last.wait_for()
        retrains.get_by_text(f"candidate: {reason}").last.wait_for()
        retrains.get_by_text("skipped: retrain").last.wait_for()
        page.screenshot(path=str(tmp_path / "retrains.png"), full_page=True)
        SHOTS.mkdir(exist_ok=True)
        shutil.copy(tmp_path / "retrains.png", SHOTS / "test-retrains.png")

        page.get_by_role("tab", name="Models").click()
        versions = page.locator("#versions")
        versions.get_by_text(f"candidate: {reason}").last.wait_for()

        promote(local_store, MODEL_NAME, V2)  # python -m trainer promote
        page.locator("#model-status").get_by_text(V2).last.wait_for()
        page.get_by_role("tab", name="Models").click()
        page.get_by_role("button", name="Refresh list").click()
        versions.get_by_text("promoted by hand (the gate said candidate").last.wait_for()
        page.screenshot(path=str(tmp_path / "models.png"), full_page=True)
        shutil.copy(tmp_path / "models.png", SHOTS / "test-models-promotion.png")
