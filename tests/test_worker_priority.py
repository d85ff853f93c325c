"""The worker's CPU priority (`streamtap.worker.Priority`), in a child process of its own: idle while it keeps
up, normal while it is behind, and, without the right to leave idle, at nice 10 instead, saying so."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from streamtap.errors import ConfigError
from streamtap.worker import Priority

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="SCHED_IDLE is Linux's")

# Runs Priority("idle") through lower(), follow(behind), follow(behind) again, follow(caught up), with a
# second thread alive; prints each step's policy of every thread, and what was logged.
SCRIPT = textwrap.dedent(
    """
    import json, logging, os, threading
    from streamtap.worker import Priority, can_leave_idle

    lines = []
    class Keep(logging.Handler):
        def emit(self, record):
            lines.append((record.levelname, record.getMessage()))
    logging.getLogger("streamtap").addHandler(Keep())
    logging.getLogger("streamtap").setLevel(logging.INFO)

    stop = threading.Event()
    helper = threading.Thread(target=stop.wait)
    helper.start()

    def policies():
        return sorted({os.sched_getscheduler(int(t)) for t in os.listdir("/proc/self/task")})

    def nices():
        return sorted({os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir("/proc/self/task")})

    p = Priority("idle")
    steps = {"can_leave_idle": can_leave_idle()}
    p.lower()
    steps["lowered"] = policies()
    steps["nice"] = nices()
    p.follow(1.0)
    steps["behind"] = policies()
    steps["raised"] = p.raised
    p.follow(2.0)
    p.follow(0.01)
    steps["caught_up"] = policies()
    stop.set()
    helper.join()
    steps["log"] = lines
    print(json.dumps(steps))
    """
)


def _run(prefix: list[str]) -> dict:
    out = subprocess.run(
        [*prefix, sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(out.stdout)


def test_idle_while_keeping_up_normal_while_behind() -> None:
    got = _run([])
    if not got["can_leave_idle"]:
        pytest.skip("this process may not leave SCHED_IDLE (no CAP_SYS_NICE)")
    assert got["lowered"] == [os.SCHED_IDLE]  # every thread, not only the one that asked
    assert got["nice"] == [os.getpriority(os.PRIO_PROCESS, 0)]  # as it was: SCHED_IDLE is the whole change
    assert got["behind"] == [os.SCHED_OTHER]
    assert got["raised"] is True
    assert got["caught_up"] == [os.SCHED_IDLE]
    assert [level for level, _ in got["log"]] == ["INFO", "INFO"]  # raised, then idle again


@pytest.mark.parametrize(
    "prefix",
    [
        # root without the capability, as in a Docker container
        ["setpriv", "--bounding-set=-sys_nice", "--inh-caps=-sys_nice"],
        # root of a user namespace (rootless containers): it shows every capability, the kernel refuses
        ["unshare", "--map-root-user"],
    ],
    ids=["no-cap-sys-nice", "user-namespace"],
)
def test_without_the_right_to_leave_idle_it_runs_at_nice_10_and_says_so(prefix: list[str]) -> None:
    tool = shutil.which(prefix[0])
    if tool is None or os.geteuid() != 0:
        pytest.skip(f"needs root and util-linux's {prefix[0]}")
    if subprocess.run([tool, *prefix[1:], "true"], capture_output=True).returncode != 0:
        pytest.skip(f"{prefix[0]} is not permitted here")
    got = _run([tool, *prefix[1:]])
    assert got["can_leave_idle"] is False
    # idle it could never leave, so it would starve while the proxy keeps the CPU busy: nice 10 instead,
    # every thread, which still gets its share
    assert got["lowered"] == got["behind"] == got["caught_up"] == [os.SCHED_OTHER]
    assert got["nice"] == [max(10, os.getpriority(os.PRIO_PROCESS, 0))]  # never raised above what it had
    assert got["raised"] is False
    (start_level, start), (level, behind) = got["log"]  # behind twice: one warning
    assert start_level == "INFO" and "nice 10" in start and "CAP_SYS_NICE" in start
    assert level == "WARNING" and "1.0 s behind" in behind and "--cap-add SYS_NICE" in behind


@pytest.mark.parametrize(
    ("value", "policy"), [("idle", "idle"), (" IDLE ", "idle"), ("10", 10), (-5, -5), ("19", 19)]
)
def test_priority_values(value: str | int, policy: str | int) -> None:
    assert Priority(value).policy == policy


@pytest.mark.parametrize("value", ["low", "", "10.5", "20", "-21"])
def test_a_priority_that_is_neither_is_a_config_error(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^STREAMTAP_WORKER_PRIORITY must be idle or a nice value"):
        Priority(value)
