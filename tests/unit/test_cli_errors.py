"""Bad input gets one clear line on stderr and a non-zero exit (real entry point)."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.conftest import one_line_error, run_cli


@pytest.mark.parametrize(
    "args,needle",
    [
        (["check", "--bogus"], "No such option: --bogus"),
        (["--sample", "3", "check"], "power of two"),
        (["--sample", "0", "check"], "power of two"),
        (["stress", "kvfree", "--count", "-1"], "--count"),
        (["stress", "kvfree", "--count", "10", "--duration", "1"], "not both"),
        (["stress", "kvfree", "--workers", "4", "--sockets", "2"], "--sockets"),
        (["lab", "--kernel", "nosuch:1", "--", "true"], "nosuch:1"),
        (["lab", "--kernel", "debian:banana", "--", "true"], "debian:banana"),
        (["lab", "--kernel", "/no/such/bzImage", "--", "true"], "/no/such/bzImage"),
        (["collect", "--duration", "-3"], "--duration"),
        (["stress", "kvfree", "--count", "5", "--self-cost"], "--self-cost needs --measure"),
        (["stress", "kvfree", "--count", "5", "--driver", "rust"], "--driver 'rust'"),
        (["bench", "overhead", "--repeats", "0"], "--repeats"),
        (["bench", "overhead", "--seconds", "0.01"], "--seconds"),
        (["nosuchcommand"], "nosuchcommand"),
        (["stress", "nolock", "bogus"], "choose stream or arena"),
        (["stress", "nolock", "stream", "--memory-max", "4096"], "--memory-max"),
        (["stress", "nolock", "arena", "--repeat", "513"], "--repeat"),
    ],
)
def test_bad_input_one_line(args, needle):
    err = one_line_error(run_cli(*args, timeout=60))
    assert needle in err


def test_no_args_prints_help():
    proc = run_cli(timeout=60)
    assert proc.returncode == 2 and "Usage" in proc.stdout + proc.stderr


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"),
    reason="dropping to an unprivileged user needs root and setpriv",
)
@pytest.mark.parametrize(
    "args",
    [
        ["check"],
        ["collect", "--duration", "1"],
        ["top", "1", "1"],
        ["stress", "kvfree", "--count", "5", "--measure"],
    ],
)
def test_not_root(args, tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO

    proc = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-m",
            "rcupending_tools.cli",
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert "needs root" in one_line_error(proc)


@pytest.mark.skipif(os.geteuid() != 0, reason="check needs root before it imports bcc")
@pytest.mark.parametrize(
    "fake,needle",
    [
        ("bcc.py", "bcc is not importable"),  # no bcc at all
        ("bcc/__init__.py", "not BPF Compiler Collection"),  # PyPI's unrelated "bcc"
    ],
)
def test_missing_or_wrong_bcc(tmp_path, fake, needle):
    path = tmp_path / fake
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("raise ImportError('no bcc here')\n" if fake == "bcc.py" else "")
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    assert needle in one_line_error(run_cli("check", env=env, timeout=60))
