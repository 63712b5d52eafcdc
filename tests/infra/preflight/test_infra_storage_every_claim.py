"""Issue 28 #24: the storage check names every claim that would wait, in one error. Before,
it stopped at the first (MinIO's), and the next `pulumi up`, with that fixed, stopped at
MLflow's."""

from __future__ import annotations

from infra.config.keys import parse_config
from infra.preflight.storage import Claim, ClusterStorage, claims_problem, stack_claims
from tests.infra.infra_helpers import PUSHED
from tests.infra.preflight.test_infra_preflight import MINIO, MLFLOW, storage, volume

MINIO_FAST = Claim("minioStorageClass", "MinIO's volume", "minio-data", "fast", "10Gi")


def test_the_dev_stack_without_a_default_class_names_both_volumes_at_once():
    claims = stack_claims(parse_config(PUSHED))  # MinIO's and MLflow's
    error = claims_problem(claims, storage({"slow": False}))
    text = str(error)
    assert "\n" not in text and error.key == "minioStorageClass"
    assert ("MinIO's volume (PersistentVolumeClaim minio-data) and MLflow's volume "
            "(PersistentVolumeClaim mlflow-data) would wait Pending forever") in text
    assert ("pulumi config set minioStorageClass <name> and pulumi config set "
            "mlflowStorageClass <name>") in text
    assert text.count("kubectl patch storageclass") == 1


def test_a_missing_class_and_a_missing_default_are_both_named():
    error = claims_problem([MINIO_FAST, MLFLOW], storage({"slow": False}))
    text = str(error)
    assert error.key == "minioStorageClass" and "\n" not in text
    assert "invalid config trainstack:minioStorageClass = 'fast': the cluster has no " \
           "StorageClass of that name (it has: slow)" in text
    assert "MLflow's volume (PersistentVolumeClaim mlflow-data) would wait Pending" in text


def test_each_waiting_claim_says_why_no_volume_of_no_class_fits_it():
    error = claims_problem([MINIO, MLFLOW], storage(volumes=[volume("512Mi", "tiny")]))
    text = str(error)
    assert "fits the claim of MinIO's volume (ReadWriteOnce, a filesystem, at least 10Gi" in text
    assert "fits the claim of MLflow's volume (ReadWriteOnce, a filesystem, at least 1Gi" in text


def test_claims_that_bind_are_not_named():
    # One classless volume binds MLflow's small claim; MinIO's alone waits.
    error = claims_problem([MINIO, MLFLOW], storage(volumes=[volume("1Gi", "small")]))
    assert "MinIO's volume" in str(error) and "MLflow's volume" not in str(error)
    assert claims_problem([MINIO, MLFLOW], ClusterStorage({"std": True}, (), frozenset())) is None
