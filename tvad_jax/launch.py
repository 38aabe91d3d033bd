"""How a `tvad` process starts: glibc's huge-page tunable for XLA's large buffers, then the CLI.

XLA's CPU runtime allocates every buffer above glibc's mmap threshold (32 MiB at most) with a
fresh `mmap` on each call, so each call pays one page fault per 4 KiB it writes: on the 2-core
machine of the README, `x * 2` on a 268 MB array took 82 ms against 23 ms with huge pages,
and the shipped decoder's gradient 274 -> 188 ms. glibc >= 2.35 backs those mappings with
transparent huge pages when `GLIBC_TUNABLES` holds `glibc.malloc.hugetlb=1`, which it reads
only when a process starts; so the process re-executes itself once with the tunable added.
`TVAD_HUGE_PAGES=0` opts out. Elsewhere (not Linux, or already set) nothing happens; a glibc
that does not know the tunable ignores it.
"""
from __future__ import annotations

import os
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
OPT_OUT = "TVAD_HUGE_PAGES"


def huge_page_environment(env: dict[str, str], platform: str = sys.platform
                          ) -> dict[str, str] | None:
    """`env` with the tunable appended to `GLIBC_TUNABLES`, or None if nothing is to change."""
    tunables = env.get("GLIBC_TUNABLES", "")
    if (not platform.startswith("linux") or env.get(OPT_OUT) == "0"
            or "glibc.malloc.hugetlb=" in tunables):
        return None
    return env | {"GLIBC_TUNABLES": f"{tunables}:{TUNABLE}" if tunables else TUNABLE}


def reexec_with_huge_pages() -> None:
    """Replace this process by the same command line with the tunable set (if it is not).

    Call it first thing, before anything heavy is imported: the imports run again after.
    """
    env = huge_page_environment(dict(os.environ))
    if env is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, sys.orig_argv, env)


def main() -> int:
    """The `tvad` console script."""
    reexec_with_huge_pages()
    from tvad_jax.cli import main as cli_main  # deferred: imported once, after the re-exec
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
