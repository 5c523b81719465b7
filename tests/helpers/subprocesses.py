"""Run Python in a fresh interpreter: hub clients read their environment at import."""

import os
import subprocess
import sys

from .paths import REPO_ROOT, TESTS_DIR


def run_python(script: str, env_updates: dict, *args, timeout: float = 300) -> str:
    """Run `script` with the repository and tests/ (for `helpers`) on its path; return stdout."""
    env = {**os.environ, **env_updates}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(TESTS_DIR), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout
