"""Drift check for render mode (`renderYamlTo`): do the committed files match the program?

`pulumi preview --expect-no-changes` cannot answer this in render mode: the render
provider is set to `alwaysRender` (every file is rewritten on every `pulumi up`, so a
fresh CI checkout gets a complete directory), and so it reports every rendered object as an
update (`~ N to update`, N the number of objects the stack's config renders) even when
nothing changed. The files themselves can answer it:

    python -m infra.drift --stack gitops

runs `pulumi up --yes --skip-preview` on the stack (which only writes files), then asks git
whether anything under the stack's `renderYamlTo` directory differs from what is
committed: a changed, new or deleted file. Exit 0: no drift; 1: drift, the files listed;
2: `pulumi` or `git` failed. Run it in CI on a clean checkout of the branch that holds the
rendered files.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys

log = logging.getLogger("infra.drift")


def _run(command: list[str]) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def rendered_directory(stack: str) -> str:
    directory = _run(["pulumi", "config", "get", "renderYamlTo", "--stack", stack]).strip()
    if not directory:
        raise ValueError(f"stack {stack} has no renderYamlTo: it renders no files")
    return directory


def changed_files(directory: str) -> list[str]:
    """`git status` of everything under `directory`: modified, added, deleted, untracked."""
    status = _run(["git", "status", "--porcelain", "--untracked-files=all", "--", directory])
    return [line for line in status.splitlines() if line.strip()]


def check(stack: str) -> int:
    try:
        directory = rendered_directory(stack)
        if changed_files(directory):
            log.error("%s has uncommitted changes before rendering: commit or discard them",
                      directory)
            return 2
        _run(["pulumi", "up", "--yes", "--skip-preview", "--stack", stack])
        changed = changed_files(directory)
    except (subprocess.CalledProcessError, ValueError, OSError) as e:
        detail = getattr(e, "stderr", "") or str(e)
        log.error("drift check failed: %s", detail.strip())
        return 2
    if changed:
        log.error("drift: the program renders %d file(s) unlike the committed ones:\n%s",
                  len(changed), "\n".join(changed))
        return 1
    log.info("no drift: %s matches what the program renders", directory)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.drift", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", required=True, help="the render-mode stack, e.g. gitops")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return check(args.stack)


if __name__ == "__main__":
    sys.exit(main())
