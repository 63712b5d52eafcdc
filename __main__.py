"""The Pulumi program's entry point: `pulumi up` runs this directory (Pulumi.yaml sets no
`main`), so the Python host creates `.venv` and installs `requirements.txt` from here,
the project root. A `main: infra/` would make it look for infra/requirements.txt instead
(it installs from the program's directory) and leave the venv without the Pulumi SDK.
The program itself is infra/__main__.py."""

import runpy

runpy.run_module("infra", run_name="__main__")
