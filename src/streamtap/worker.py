"""The worker process: interprets what the proxy observed, records it and serves the metrics.

The proxy (`streamtap.addon`) starts one worker as its child (`python -m streamtap.worker`) and sends it
batches of `pipeline` messages over the worker's stdin, each a `frame`: a 4-byte length, then the list,
marshalled. The first batch is the configuration; the worker answers on stdout with one line, `ready` or
`error: <message>`.
When its stdin closes, the worker finishes what it holds, writes everything queued and exits. It ignores
SIGINT and SIGTERM: the proxy decides when it stops (a Ctrl-C reaches the whole process group).

Decoding, parsing, the database and the metrics endpoint all live here, so the proxy's event loop only
stamps chunks and forwards them, and the writer never competes with it for the GIL. The worker lowers its
own CPU priority (`nice`): where it shares a core with the proxy, forwarding goes first and recording
catches up when the proxy is idle.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import marshal
import os
import pickle
import signal
import struct
import sys
import threading
import time
from typing import IO, Any

from .errors import ConfigError, StreamtapError

log = logging.getLogger("streamtap")

_HEADER = struct.Struct("<I")
_MARSHAL_TAG, _PICKLE_TAG = b"m", b"p"
_MARSHAL = _MARSHAL_TAG[0]

# Collect the youngest generation every 10,000 net allocations instead of 700. The worker holds every open
# stream's events until the stream ends; at the default, each event record was traversed again and again
# while its stream lasted (~0.8 µs of the worker's ~6 per event went to the collector). Garbage is still
# freed by reference counting at once: only cycles wait, and the worker makes few.
GC_THRESHOLD = (10_000, 10, 10)


def read_frame(stream: IO[bytes]) -> Any:
    """The next frame from `stream`, or None at its end (a frame cut short counts as the end)."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    payload = stream.read(size)
    if len(payload) < size or not payload:
        return None
    body = memoryview(payload)[1:]
    return marshal.loads(body) if payload[0] == _MARSHAL else pickle.loads(body)


def frame(obj: Any) -> bytes:
    """`obj` as one frame: a 4-byte length, a format byte, then `obj` marshalled, or pickled if it holds
    anything marshal cannot write. The proxy's messages are tuples of str, bytes, float, int and None, which
    marshal writes in half the time pickle takes (the proxy's sender thread does this for every message);
    both ends are the same interpreter, as marshal requires."""
    try:
        payload = _MARSHAL_TAG + marshal.dumps(obj)
    except ValueError:  # an object of a type marshal does not know
        payload = _PICKLE_TAG + pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(payload)) + payload


class Worker:
    """Everything the worker runs, set up from the proxy's configuration (see `addon.worker_config`)."""

    def __init__(self, config: dict[str, Any]) -> None:
        import prometheus_client

        from .db.engine import make_engine, upgrade
        from .durations import parse_duration
        from .maintenance import RetentionThread
        from .metrics import build_metrics, serve
        from .pipeline import Pipeline
        from .recorder import Recorder, mark_interrupted

        # one `_created` series per counter and histogram would double the exposition for no use here
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
        registry = prometheus_client.CollectorRegistry()
        self.metrics = build_metrics(registry, max_models=config["max_models"])
        self.metrics_server = None
        self.retention = None
        self.recorder = None
        instance = config["instance"]
        try:
            if config["metrics_port"]:
                self.metrics_server = serve(
                    registry, host=config["metrics_host"], port=config["metrics_port"]
                )
            engine = make_engine(config["db"])
            upgrade(engine)
            mark_interrupted(engine, instance)
        except StreamtapError:
            self.close()
            raise
        if config["retention"]:
            self.retention = RetentionThread(engine, parse_duration(config["retention"]))
            self.retention.start()
        metrics = self.metrics
        self.recorder = recorder = Recorder(
            engine,
            queue_size=config["queue_size"],
            keep_events=config["keep_events"],
            on_written=metrics.recorder_written,
            on_dropped=metrics.recorder_dropped,
        )
        metrics.bind_recorder(lambda: recorder.depth)
        recorder.start()
        self.pipeline = Pipeline(
            instance=instance,
            metadata_only=config["capture"] == "metadata",
            metrics=metrics,
            on_start=recorder.submit_start,
            on_record=recorder.submit,
        )

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()
        if self.retention is not None:
            self.retention.stop()
        if self.metrics_server is not None:
            self.metrics_server.close()


class Priority:
    """The worker's CPU priority, for all its threads (Linux schedules each thread on its own).

    `idle` (the default): SCHED_IDLE, the worker runs only on CPU time nothing else wants, and a proxy
    thread that wakes preempts it at once, so recording never delays a stream. When the worker falls more
    than `RAISE_LAG` seconds behind what the proxy observed (the CPU is full), in interpreting it or in
    writing it (the recorder's queue: its writer thread is as idle as the rest), it returns to normal
    priority until it has caught up (below `LOWER_LAG`): forwarding then shares the CPU with recording,
    instead of recording falling ever further behind. Leaving SCHED_IDLE needs CAP_SYS_NICE (root outside a
    container) or an RLIMIT_NICE of at least 20; `lower()` asks first, and where the worker could not leave
    it, it runs at `FALLBACK_NICE` instead (and says so): idle for good, recording would wait for as long
    as every CPU is busy, and drop once the proxy held `max_pending` observations; at nice 10 it still gets
    about a tenth of a busy CPU. A number instead of `idle`: that `nice` value. Where the worker has a core
    to itself, none of this changes anything.
    """

    RAISE_LAG = 0.5
    LOWER_LAG = 0.05
    FALLBACK_NICE = 10

    def __init__(self, policy: str | int) -> None:
        self.policy: str | int = _policy(policy)
        self.raised = False
        self._may_raise = True  # until lower() finds otherwise, or raising fails
        self._warned = False

    def lower(self) -> None:
        if self.policy != "idle":
            self._nice(int(self.policy))
            return
        self._may_raise = can_leave_idle()
        if self._may_raise:
            self._set(os.SCHED_IDLE)
            return
        nice = max(self.FALLBACK_NICE, os.getpriority(os.PRIO_PROCESS, 0))
        log.info(
            "streamtap: the worker could not come back from idle CPU priority (%s), so it runs at nice %d: "
            "while every CPU is busy, it gets a share of one",
            _HOW_TO_RAISE,
            nice,
        )
        self._nice(nice)

    @staticmethod
    def _nice(value: int) -> None:
        for tid in _threads():
            with contextlib.suppress(OSError, ValueError):  # a thread that just ended; a value not permitted
                os.setpriority(os.PRIO_PROCESS, tid, value)

    def follow(self, lag: float) -> None:
        """Called with how far behind the proxy the worker is, in seconds."""
        if self.policy != "idle":
            return
        if not self.raised and lag > self.RAISE_LAG:
            if self._may_raise and self._set(os.SCHED_OTHER):
                self.raised = True
                log.info("streamtap: recording is %.1f s behind; the worker runs at normal priority", lag)
            elif not self._warned:
                self._may_raise = False
                self._warned = True
                log.warning(
                    "streamtap: recording is %.1f s behind and the worker may not raise its priority (%s)",
                    lag,
                    _HOW_TO_RAISE,
                )
        elif self.raised and lag < self.LOWER_LAG:
            self._set(os.SCHED_IDLE)
            self.raised = False
            log.info("streamtap: recording caught up; the worker runs at idle priority again")

    @staticmethod
    def _set(policy: int) -> bool:
        ok = True
        for tid in _threads():
            try:
                os.sched_setscheduler(tid, policy, os.sched_param(0))
            except ProcessLookupError:
                pass  # a thread that just ended
            except OSError:
                ok = False  # not permitted
        return ok


_HOW_TO_RAISE = "it needs CAP_SYS_NICE outside a user namespace, e.g. docker run --cap-add SYS_NICE"


def _policy(value: str | int) -> str | int:
    """`idle`, or a nice value from -20 to 19 (STREAMTAP_WORKER_PRIORITY); ConfigError for anything else."""
    text = str(value).strip().lower()
    if text == "idle":
        return "idle"
    try:
        nice = int(text)
    except ValueError:
        nice = None
    if nice is None or not -20 <= nice <= 19:
        raise ConfigError(
            f"STREAMTAP_WORKER_PRIORITY must be idle or a nice value from -20 to 19, not {value!r}"
        )
    return nice


def can_leave_idle() -> bool:
    """Whether this process's threads may return from SCHED_IDLE to normal priority. Asked of the kernel
    itself, by a thread that tries: the rules (CAP_SYS_NICE, or an RLIMIT_NICE that permits the nice value)
    are checked against the user namespace the process runs in, and inside one (rootless containers,
    Docker with userns-remap) a capability it shows may still be refused."""
    answer: list[bool] = []

    def attempt() -> None:
        try:  # pid 0: this thread only
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
            answer.append(True)
        except (AttributeError, OSError):
            answer.append(False)

    probe = threading.Thread(target=attempt, name="streamtap-priority-probe")
    probe.start()
    probe.join()
    # join() returns a moment before the thread is gone; until then, threads listed for a priority change
    # would include it (at idle priority, where it may have been left)
    task = f"/proc/self/task/{probe.native_id}"
    gone = time.monotonic() + 1.0
    while probe.native_id and os.path.exists(task) and time.monotonic() < gone:
        time.sleep(0.001)
    return answer == [True]


def _threads() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


def _lag(batch: list[tuple[Any, ...]]) -> float:
    """How long ago the proxy observed the newest message of `batch` (every kind but two carries a time)."""
    for msg in reversed(batch):
        if len(msg) > 2 and isinstance(msg[2], float):
            return time.monotonic() - msg[2]
    return 0.0


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # like mitmproxy's own lines, which these sit between on the proxy's stderr
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="[%(asctime)s.%(msecs)03d] %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)  # before it is imported: it logs at import
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    config = read_frame(stdin)
    if not isinstance(config, dict):
        return 2
    try:
        priority = Priority(config.get("priority", "idle"))
        worker = Worker(config)
    except StreamtapError as e:
        stdout.write(f"error: {e}\n".encode())
        stdout.flush()
        return 1
    except Exception as e:  # a bug, or an OS error nothing turned into a message: say what it was
        log.exception("streamtap: the worker could not start")
        stdout.write(f"error: {type(e).__name__}: {e}\n".encode())
        stdout.flush()
        return 1
    stdout.write(b"ready\n")
    stdout.flush()
    from . import native

    log.info("streamtap: the worker's hot path is %s", native.status)
    priority.lower()
    # As in the proxy: what is loaded by now lives as long as the process; full collections skip it.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
    handle = worker.pipeline.handle
    recorder = worker.recorder
    assert recorder is not None
    from .records import Outcome

    try:
        while (batch := read_frame(stdin)) is not None:
            # behind is behind in either thread: interpreting what the proxy saw, or writing it
            priority.follow(max(_lag(batch), recorder.lag()))
            handle(batch)
        # The proxy ends every exchange before it closes our stdin; any still open, it did not live to.
        worker.pipeline.close(Outcome.INTERRUPTED, "the proxy exited mid-stream")
    finally:
        worker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
