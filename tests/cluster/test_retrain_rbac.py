"""The retrain's ServiceAccount on the real API server (`kubectl auth can-i`): it may
create the one training job kind of the stack and read Jobs, in its own namespace only;
nothing else, no Secrets. And every retrainSchedule the stack accepts, the API server
accepts in a CronJob (dry run), and every one the server refuses is refused first."""

from __future__ import annotations

import pytest

from infra.config.schedule import schedule_problem
from infra.workloads.catalog import RETRAIN
from tests.infra.infra_helpers import PUSHED
from tests.infra.render import render

AS = "--as=system:serviceaccount:{ns}:" + RETRAIN.service_account
KINDS = {"pytorchjob": "pytorchjobs.kubeflow.org", "trainjob": "trainjobs.trainer.kubeflow.org"}
NEVER = [("create", "jobs.batch"), ("create", "cronjobs.batch"), ("create", "pods"),
         ("create", "pods/exec"), ("create", "deployments.apps"), ("create", "configmaps"),
         ("create", "roles.rbac.authorization.k8s.io"),
         ("create", "rolebindings.rbac.authorization.k8s.io"), ("get", "secrets"),
         ("list", "secrets"), ("delete", "jobs.batch")]


def can_i(cp, namespace: str, verb: str, resource: str, where: str) -> bool:
    done = cp.kubectl("auth", "can-i", verb, resource, "-n", where, AS.format(ns=namespace),
                      check=False)
    assert done.stdout.strip() in ("yes", "no"), done.stderr
    return done.stdout.strip() == "yes"


def expected(api: str, namespace: str) -> dict[tuple[str, str, str], bool]:
    """(verb, resource, namespace) -> allowed: the Role's rules, and what they leave out."""
    own, other = KINDS[api], next(k for a, k in KINDS.items() if a != api)
    elsewhere = f"{namespace}-other"
    allowed = {(verb, own, namespace): True for verb in ("create", "get", "list", "delete")}
    allowed[("get", "jobs.batch", namespace)] = True
    denied = {(verb, resource, namespace): False for verb, resource in NEVER}
    denied.update({("patch", own, namespace): False, ("update", own, namespace): False,
                   ("create", other, namespace): False, ("create", own, elsewhere): False,
                   ("get", "jobs.batch", elsewhere): False, ("get", "secrets", elsewhere): False})
    return {**allowed, **denied}


@pytest.fixture
def both_kinds(operator, tmp_path_factory):
    """The control plane with both training APIs' CRDs: kubectl resolves their names."""
    from tests.cluster.trainjob_kit import installed

    return installed(operator, tmp_path_factory.mktemp("trainer-v2"))


@pytest.mark.parametrize("api", sorted(KINDS))
def test_the_retrain_account_may_create_only_its_training_job_kind(both_kinds, api):
    control_plane, namespace = both_kinds, f"retrain-rbac-{api}"
    rendering = render({**PUSHED, "namespace": namespace, "retrainSchedule": "@daily",
                        "trainingApi": api})
    objects = [o for o in rendering.objects.values()
               if o["kind"] in ("Role", "RoleBinding")
               or (o["kind"] == "ServiceAccount" and o["metadata"]["name"] == RETRAIN.name)]
    control_plane.apply([rendering.objects[f"Namespace/{namespace}"]])
    control_plane.apply(objects)
    control_plane.kubectl("create", "namespace", f"{namespace}-other")
    wanted = expected(api, namespace)
    found = {case: can_i(control_plane, namespace, *case) for case in wanted}
    assert found == wanted


SCHEDULES = ["0 3 * * 0", "*/15 * * * *", "0 0 1 1 *", "30 2 * * MON-FRI", "0 12 * JAN,JUL *",
             "0-59/5 1-3 ? * *", "@daily", "@hourly", "@weekly", "@monthly", "@yearly",
             "@annually", "@midnight", "61 * * * *", "* * * *", "* * * * * *", "0 3 * * 7",
             "0 24 * * *", "0 0 0 * *", "0 0 * 13 *", "*/0 * * * *", "5-1 * * * *",
             "@every 1h", "@reboot", "TZ=UTC 0 3 * * *", "CRON_TZ=UTC 0 3 * * *", "",
             "0 3 * * sun", "1,2,3 * * * *", "1-2-3 * * * *", "a * * * *", "0 3 * FOO *"]


def test_the_stack_refuses_exactly_the_schedules_the_api_server_refuses(control_plane):
    cronjob = render({**PUSHED, "retrainSchedule": "@daily"}).objects["CronJob/trainstack-retrain"]
    disagree = []
    for schedule in SCHEDULES:
        probe = {**cronjob, "metadata": {"name": "probe", "namespace": "default"},
                 "spec": {**cronjob["spec"], "schedule": schedule}}
        server_ok = control_plane.apply([probe], dry_run=True, check=False).returncode == 0
        ours_ok = schedule_problem(schedule) is None and bool(schedule.strip())
        if server_ok != ours_ok:
            disagree.append((schedule, server_ok, ours_ok))
    # The server accepts robfig's `@every <duration>`, which Kubernetes does not document
    # for CronJobs: the stack refuses it on purpose. Nothing else differs either way.
    assert disagree == [("@every 1h", True, False)], disagree
