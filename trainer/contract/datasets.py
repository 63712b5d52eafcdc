"""Dataset names: a dataset is named by its kind (``cifar10``, ``digits``, ``imagefolder``:
the stack's one image folder), or an image folder of its own by ``imagefolder-<label>``.
The name spells the data's prefix (``datasets/<name>``) and the model's name
(``<model>-<name>``, trainer.contract.layout). Stdlib only.
"""

from __future__ import annotations

import re

FOLDER_KIND = "imagefolder"
DATASET_LABEL_RULE = ("1-40 characters of a-z, 0-9 and '-', starting and ending with a letter "
                      "or digit")
_DATASET_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")


def folder_dataset_name(label: str) -> str:
    """``imagefolder-<label>``: an image folder's own dataset name (ValueError if the label
    breaks DATASET_LABEL_RULE)."""
    if not isinstance(label, str) or not _DATASET_LABEL.fullmatch(label):
        raise ValueError(f"dataset label {label!r}: allowed: {DATASET_LABEL_RULE}")
    return f"{FOLDER_KIND}-{label}"


def dataset_kind(name: str) -> str:
    """The kind of the dataset named ``name``: ``imagefolder`` for ``imagefolder-<label>``,
    else the name itself (every other kind's one name)."""
    return FOLDER_KIND if name.startswith(f"{FOLDER_KIND}-") else name


def dataset_name_problem(kind: str, name: str) -> str | None:
    """Why ``name`` cannot name a dataset of ``kind`` (None: it can). Every kind's name is
    the kind itself; an image folder may also have its own (:func:`folder_dataset_name`)."""
    if name == kind:
        return None
    if kind != FOLDER_KIND:
        return f"a {kind} dataset is named {kind!r}; only imagefolder datasets have names of their own"
    label = name[len(FOLDER_KIND) + 1:] if name.startswith(f"{FOLDER_KIND}-") else None
    if label is None or not _DATASET_LABEL.fullmatch(label):
        return f"expected 'imagefolder' or 'imagefolder-<label>', <label> {DATASET_LABEL_RULE}"
    return None
