"""A model's code is part of a run's identity: a change without a revision bump fails here."""

from __future__ import annotations

import pytest

from trainer.contract.config import ConfigError, RunIdentity, TrainConfig
from trainer.models.zoo import MODEL_REVISIONS, architecture_signature, model_revision

# (model, revision) -> architecture_signature(model) of that revision's code. When a model's
# code changes, bump its MODEL_REVISIONS entry (trainer/models/zoo.py) and add the new line: the
# old runs' checkpoints then belong to other run_ids and are never resumed with the new code.
# (A torch/torchvision upgrade that only changes how layers print: record the new signature
# under the same revision.)
RECORDED = {
    ("resnet18", 1): "940fbe55a2134c67cef335d2ba7af9552031b9e28bfe2eea5bb8e516fb12e9a0",
    ("resnet18-imagenet", 1): "9e0edb01847be4ae153a2d8834be4f0e6311e250444bd9e252f8248c2a1c6a39",
    ("smallcnn", 1): "9d9f8701e24fd35256cd9ec4e3463c1fc30e684203fd16f32f352e1cedeb366b",
    ("fastcifar", 1): "6162e8a0e3fd0643a98acc84b008491bc50c462b7784d09692f01a16d97e130b",
}


@pytest.mark.parametrize("name", sorted(MODEL_REVISIONS))
def test_each_models_code_is_the_code_of_its_recorded_revision(name):
    revision = MODEL_REVISIONS[name]
    signature = architecture_signature(name)
    assert RECORDED.get((name, revision)) == signature, (
        f"the code of model {name!r} changed (signature {signature}) but its revision is still "
        f"{revision}: bump MODEL_REVISIONS[{name!r}] to {revision + 1} in trainer/models/zoo.py and "
        f"record ({name!r}, {revision + 1}): {signature!r} here")
    older = [RECORDED[(name, r)] for r in range(1, revision) if (name, r) in RECORDED]
    assert signature not in older, "a revision bump must come with a code change"


def test_the_signature_covers_a_model_class_in_its_own_module(monkeypatch):
    """fastcifar lives in trainer/models/fastcifar.py: its layers and its class's whole source
    (forward, identity init, data-dependent init) are its code too."""
    import inspect

    from trainer.models import fastcifar
    from trainer.models import zoo as models

    before = architecture_signature("fastcifar")
    monkeypatch.setattr(fastcifar, "WIDTHS", (32, 64, 96))
    assert architecture_signature("fastcifar") != before
    monkeypatch.undo()
    source = inspect.getsource
    monkeypatch.setattr(models.inspect, "getsource", lambda obj: source(obj) + (
        "\n# an edited init_from_data" if obj is fastcifar.FastCIFAR else ""))
    assert architecture_signature("fastcifar") != before


def test_the_signature_sees_a_changed_layer(monkeypatch):
    from trainer.models import zoo as models

    before = architecture_signature("smallcnn")
    monkeypatch.setattr(models, "_conv_bn", lambda cin, cout: models.nn.Sequential(
        models.nn.Conv2d(cin, cout, 5, padding=2, bias=False), models.nn.BatchNorm2d(cout),
        models.nn.ReLU(inplace=True)))
    assert architecture_signature("smallcnn") != before


def test_run_id_covers_data_content_and_model_revision_not_operational_fields():
    cfg = TrainConfig(dataset="imagefolder", model="smallcnn")
    base = RunIdentity(cfg, "sha256:aa", model_revision("smallcnn"))
    assert base.run_id == RunIdentity(cfg, "sha256:aa", "smallcnn@1").run_id
    assert RunIdentity(cfg, "sha256:bb", "smallcnn@1").run_id != base.run_id
    assert RunIdentity(cfg, "sha256:aa", "smallcnn@2").run_id != base.run_id
    for change in ({"log_every": 5}, {"precision": "fp32"}, {"keep_checkpoints": 7}):
        other = TrainConfig(dataset="imagefolder", model="smallcnn", **change)
        assert RunIdentity(other, "sha256:aa", "smallcnn@1").run_id == base.run_id, change
    assert base.to_dict() == {"run_id": base.run_id, "data_fingerprint": "sha256:aa",
                              "model_revision": "smallcnn@1"}
    with pytest.raises(ConfigError, match="data_fingerprint"):
        RunIdentity(cfg, "", "smallcnn@1")
