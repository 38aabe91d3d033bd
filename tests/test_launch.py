"""`tvad_jax.launch`: the huge-page tunable, added once, and the re-executed process."""
from __future__ import annotations

import os
import subprocess
import sys

from tvad_jax import launch


def test_adds_the_tunable_on_linux_and_keeps_other_tunables():
    assert launch.huge_page_environment({}, "linux") == {"GLIBC_TUNABLES": launch.TUNABLE}
    env = launch.huge_page_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2",
                                        "HOME": "/h"}, "linux")
    assert env == {"GLIBC_TUNABLES": f"glibc.malloc.arena_max=2:{launch.TUNABLE}", "HOME": "/h"}


def test_changes_nothing_when_set_opted_out_or_not_linux():
    assert launch.huge_page_environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"},
                                        "linux") is None
    assert launch.huge_page_environment({launch.OPT_OUT: "0"}, "linux") is None
    assert launch.huge_page_environment({}, "darwin") is None


def test_the_process_restarts_once_with_the_tunable_and_its_arguments():
    code = ("import os, sys; from tvad_jax.launch import reexec_with_huge_pages; "
            "print('start', flush=True); reexec_with_huge_pages(); "
            "print(os.environ.get('GLIBC_TUNABLES'), sys.argv[1:])")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", launch.OPT_OUT)}
    out = subprocess.run([sys.executable, "-c", code, "a b", "c"], env=env, check=True,
                         capture_output=True, text=True).stdout
    restarted = "start\n" if sys.platform.startswith("linux") else ""
    tunable = launch.TUNABLE if restarted else None
    assert out == f"start\n{restarted}{tunable} ['a b', 'c']\n"
