"""What `pulumi up` does going from one rendering to the next: the mocks compute no diffs,
so this derives them with the rules of the engine and of pulumi-kubernetes.

    plan = up_plan(render(before), render(after), replaced=("minio-root-password",))
    plan.changes()   # {"Deployment/minio": "update", "Secret/inference-auth": "replace", ...}

Resources are matched by URN (a Kubernetes object keeps its URN when its name changes) and
named "<kind>/<Pulumi name>" (a custom resource's kind, or the last part of its type).
Each gets one step:

- `update`: inputs changed, nothing that forces a replacement did.
- `replace`: create the new object, update what reads it, delete the old one at the end.
- `replace-delete-first`: delete, then create: the provider's rule for an object whose
  name stays the same (two objects cannot share it), or the `deleteBeforeReplace` option.
  The engine first deletes every dependent that would be replaced once the properties it
  takes from the deleted one are unknown (step_generator.go calculateDependentReplacements:
  only property dependencies count, not `dependsOn`), and those are replaced too.
- `create`, `delete`, `same`.

What forces a replacement (pulumi-kubernetes provider/pkg/provider/diff.go
forceNewProperties and Diff): a change of metadata.name or namespace; a Secret's type,
data or stringData and a ConfigMap's data or binaryData (the provider's defaults:
enableSecretMutable / enableConfigMapMutable unset); a Job's spec.template or
spec.selector; a Deployment's spec.selector; any path in `replaceOnChanges`; and
`pulumi up --replace` (`replaced`, by Pulumi name).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.infra.render import Registration, Rendering

# kind -> the paths (top-level property, then keys) whose change replaces the object.
FORCE_NEW: dict[str, tuple[tuple[str, ...], ...]] = {
    "Secret": (("type",), ("data",), ("stringData",)),
    "ConfigMap": (("data",), ("binaryData",)),
    "Job": (("spec", "template"), ("spec", "selector")),
    "Deployment": (("spec", "selector"),),
}
METADATA_FORCE_NEW = (("metadata", "name"), ("metadata", "namespace"))


def _at(inputs: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = inputs
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def kind_of(r: Registration) -> str:
    return r.inputs.get("kind") or r.type.rsplit(":", 1)[-1]


def label(r: Registration) -> str:
    return f"{kind_of(r)}/{r.name}"


def _force_new_paths(r: Registration) -> list[tuple[str, ...]]:
    paths = list(FORCE_NEW.get(kind_of(r), ())) if r.type.startswith("kubernetes:") else []
    if r.type.startswith("kubernetes:"):
        paths += METADATA_FORCE_NEW
    return paths + [tuple(p.split(".")) for p in r.replace_on_changes]


def _replaces(old: Registration, new: Registration) -> bool:
    return any(_at(old.inputs, p) != _at(new.inputs, p) for p in _force_new_paths(new))


def _deletes_first(old: Registration, new: Registration) -> bool:
    """The option, or the provider's rule: the same name cannot be created twice."""
    if new.delete_before_replace:
        return True
    return new.type.startswith("kubernetes:") and all(
        _at(old.inputs, p) == _at(new.inputs, p) for p in METADATA_FORCE_NEW)


def _replaced_with_unknown(r: Registration, unknown: set[str]) -> bool:
    """The provider's Diff when the top-level properties `unknown` may change: a forced
    replacement under any of them (an unknown metadata may carry a new name)."""
    return any(path[0] in unknown for path in _force_new_paths(r))


@dataclass
class Plan:
    steps: dict[str, str]  # label -> step
    before: Rendering
    after: Rendering

    def changes(self) -> dict[str, str]:
        """Every step but `same`."""
        return {k: step for k, step in self.steps.items() if step != "same"}


def _dependents_replaced(before: Rendering, root: str) -> set[str]:
    """The engine's dependent replacements of `root` (deleted first), in the old state."""
    replace_set = {root}
    for urn in sorted(before.resources, key=lambda u: before.resources[u].order):
        r = before.resources[urn]
        if urn in replace_set or not r.custom:
            continue
        unknown = {prop for prop, deps in r.property_dependencies.items()
                   if replace_set & set(deps)}
        if unknown and _replaced_with_unknown(r, unknown):
            replace_set.add(urn)
    return replace_set - {root}


def up_plan(before: Rendering, after: Rendering, replaced: tuple[str, ...] = ()) -> Plan:
    steps: dict[str, str] = {}
    for urn, new in after.resources.items():
        old = before.resources.get(urn)
        if old is None:
            steps[label(new)] = "create"
        elif new.name in replaced or (new.custom and _replaces(old, new)):
            deletes_first = new.name not in replaced and _deletes_first(old, new)
            steps[label(new)] = "replace-delete-first" if deletes_first else "replace"
        else:
            steps[label(new)] = "update" if old.inputs != new.inputs else "same"
    for urn, old in before.resources.items():
        if urn not in after.resources:
            steps[label(old)] = "delete"
    for urn, new in after.resources.items():
        if steps[label(new)] == "replace-delete-first" and urn in before.resources:
            for dependent in _dependents_replaced(before, urn):
                steps[label(before.resources[dependent])] = "replace-delete-first"
    return Plan(steps, before, after)
