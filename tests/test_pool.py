"""The thread team (csrc/_pool.h) on its own: tools/pool_stress.c, built with the C
compiler that builds the extension, runs thousands of tasks of random shapes from several
threads at once and checks the order of their phases, that every item runs exactly once,
and that a worker stuck inside an item holds up only that item (its phase's other items
are taken over). tools/sanitize.sh runs the same program under ThreadSanitizer."""
import os
import shutil
import subprocess
import sysconfig

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "tools", "pool_stress.c")


def _compiler():
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc) or shutil.which("cc") or shutil.which("gcc")


@pytest.fixture(scope="module")
def stress_program(tmp_path_factory):
    cc = _compiler()
    if cc is None:
        pytest.skip("no C compiler")
    exe = str(tmp_path_factory.mktemp("pool") / "pool_stress")
    subprocess.run([cc, "-O2", "-pthread", "-I", os.path.join(ROOT, "csrc"), SOURCE,
                    "-o", exe], check=True, capture_output=True, timeout=120)
    return exe


def test_pool_stress_tasks_from_several_callers(stress_program):
    run = subprocess.run([stress_program, "1500", "3"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert "4500 tasks on 3 callers: ok" in run.stdout


def test_pool_stress_one_caller(stress_program):
    run = subprocess.run([stress_program, "2000", "1"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr


def test_pool_stress_refuses_bad_arguments(stress_program):
    run = subprocess.run([stress_program, "0"], capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and "usage" in run.stderr
