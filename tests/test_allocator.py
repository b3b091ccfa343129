"""graphdesc's malloc policy (graphdesc.allocator): freed memory kept for the next call, never over the user's
choice."""

import platform

import pytest
from helpers import run_python

from graphdesc.allocator import POLICY, USER_KNOBS

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the policy applies to glibc only")


def _run(code: str, **env) -> str:
    return run_python(code, drop=USER_KNOBS, **env)


# 30 blocks of 8 MiB, allocated, written and freed three times: the minor page faults of the third round
FAULTS = """
import resource
import numpy as np
{imports}
def round_():
    blocks = [np.empty(2**20) for _ in range(30)]
    for b in blocks:
        b.fill(1.0)
for _ in range(2):
    round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
round_()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_importing_graphdesc_keeps_freed_memory_for_the_next_round():
    """With graphdesc imported, a third round of 240 MiB of 8 MiB blocks reuses the memory the earlier rounds
    freed (no page faults, measured); with glibc's defaults (``GLIBC_TUNABLES`` set, empty: graphdesc leaves
    malloc alone) the kernel hands part of them over again, one fault per 4 KiB page (15,418 measured with
    glibc 2.36: 60 MiB of the 240)."""
    kept = int(_run(FAULTS.format(imports="import graphdesc")))
    default = int(_run(FAULTS.format(imports="import graphdesc"), GLIBC_TUNABLES=""))
    assert kept < 500, kept
    assert default > 5000, default


def test_the_policy_is_set_for_children_and_said():
    """The values go to ``os.environ`` (children read them at start) and ``policy()`` names them as graphdesc's,
    here and in a child, which leaves them as they are."""
    show = "import os, graphdesc.allocator as a; print(*[os.environ.get(k) for k in a.POLICY], a.policy(), sep='|')"
    expected = "|".join([*(str(v) for v in POLICY.values()),
                         ", ".join(f"{k}={v}" for k, v in POLICY.items()) + " (graphdesc's)"])
    assert _run(show) == expected
    child = f"import graphdesc, subprocess, sys; print(subprocess.run([sys.executable, '-c', {show!r}], " \
            "capture_output=True, text=True).stdout.strip())"
    assert _run(child) == expected


@pytest.mark.parametrize("name,value", [("MALLOC_TRIM_THRESHOLD_", "134217728"), ("GLIBC_TUNABLES", "")])
def test_a_users_choice_is_kept(name, value):
    """Any malloc variable set by the user, to anything: graphdesc sets nothing and says the choice is the user's."""
    out = _run("import os, graphdesc.allocator as a; print(*[os.environ.get(k) for k in a.POLICY], a.policy(), "
               "sep='|')", **{name: value})
    *values, said = out.split("|")
    assert values == [value if k == name else "None" for k in POLICY]
    assert said == f"{name}={value} (set by the user)"
