"""Stage output reaches a pipe line by line (as under `dvc repro`), not when a buffer fills."""
import os
import subprocess
import sys
import time

from conftest import REPO


def test_progress_lines_arrive_while_the_command_runs(tmp_path):
    # a command that prints one line through the CLI's entry, then keeps running: the line must arrive first
    code = ("import time\nfrom robustct import cli\n"
            "cli.main(['fetch-data', '--params', 'missing.yaml'])\n"  # exits early with an error on stderr
            "print('progress line'); time.sleep(30)")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env.pop("PYTHONUNBUFFERED", None)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        start = time.monotonic()
        line = proc.stdout.readline()
        assert line.strip() == "progress line" and time.monotonic() - start < 25
    finally:
        proc.kill()
