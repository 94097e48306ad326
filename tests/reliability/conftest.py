"""Shared fixtures of the reliability suite: a real second account."""

import os

import pytest

SECOND_USER = "lcbench-other"


@pytest.fixture
def second_user():
    """A real second account (useradd), so the planting is done by another user's own processes."""
    import shutil
    import subprocess

    if os.geteuid() != 0 or not (shutil.which("useradd") and shutil.which("runuser")):
        pytest.skip("a second user needs root with useradd and runuser (Linux)")
    import pwd

    try:
        pwd.getpwnam(SECOND_USER)
    except KeyError:
        made = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/bin/sh", SECOND_USER],
            capture_output=True,
            text=True,
        )
        if made.returncode != 0:
            pytest.skip(f"useradd refused: {made.stderr.strip()}")

    def as_second_user(script: str) -> None:
        subprocess.run(["runuser", "-u", SECOND_USER, "--", "sh", "-ec", script], check=True)

    return pwd.getpwnam(SECOND_USER).pw_uid, as_second_user
