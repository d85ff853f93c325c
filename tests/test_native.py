"""The compiled hot path (`streamtap.native`): used where the build matches the sources, never otherwise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from streamtap import native
from streamtap.worker import frame
from test_worker_channel import config

SRC = Path(native.__file__).resolve().parent.parent
BUILD = native.build_dir()
BUILT = BUILD is not None and (BUILD / native.MANIFEST).is_file()
PURE_RUN = os.environ.get("STREAMTAP_NATIVE") == "0"


def python(src: Path, *args: str, **env: str) -> str:
    """The output of a fresh interpreter run with streamtap imported from `src` (STREAMTAP_NATIVE unset)."""
    return subprocess.run(
        [sys.executable, *args],
        env={**os.environ, "PYTHONPATH": str(src), "STREAMTAP_NATIVE": "", **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def which_runs(src: Path, **env: str) -> tuple[str, str]:
    """A fresh interpreter importing streamtap from `src`: (native.status, the file of streamtap.sse)."""
    code = "import streamtap, streamtap.sse as s; print(streamtap.native.status); print(s.__file__)"
    out = python(src, "-c", code, **env).splitlines()
    return out[0], out[1]


@pytest.mark.skipif(PURE_RUN, reason="STREAMTAP_NATIVE=0: the pure-Python run")
@pytest.mark.skipif(not shutil.which("cc") and not shutil.which("gcc"), reason="no C compiler")
def test_this_checkout_runs_the_compiled_modules() -> None:
    """`make test` builds them first (`make native`): the suite runs on what the benchmarks measure."""
    assert native.status == "compiled (mypyc)", native.status
    from streamtap import pipeline, sse, tap

    for module in (sse, tap, pipeline):
        assert module.__file__ is not None and module.__file__.endswith(".so")


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of the package and its build, as another checkout would have them."""
    if not BUILT:
        pytest.skip("no compiled build (make native)")
    assert BUILD is not None
    shutil.copytree(
        SRC / "streamtap", tmp_path / "src" / "streamtap", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(BUILD, tmp_path / "build" / "native" / BUILD.name)
    return tmp_path


def test_an_edited_source_turns_the_whole_build_off(checkout: Path) -> None:
    status, sse = which_runs(checkout / "src")
    assert status == "compiled (mypyc)"
    assert sse.startswith(str(checkout / "build")) and sse.endswith(".so")
    # one module edited (even a comment): every compiled module stands down, they call each other directly
    tap = checkout / "src" / "streamtap" / "tap.py"
    tap.write_text(tap.read_text() + "# edited\n")
    status, sse = which_runs(checkout / "src")
    assert status.startswith("pure Python (the compiled modules are older than the sources")
    assert sse == str(checkout / "src" / "streamtap" / "sse.py")


def test_streamtap_version_says_which_runs(checkout: Path) -> None:
    src = checkout / "src"
    assert python(src, "-m", "streamtap", "--version").endswith("(hot path: compiled (mypyc))\n")
    assert python(src, "-m", "streamtap", "--version", STREAMTAP_NATIVE="off").endswith(
        "(hot path: pure Python (STREAMTAP_NATIVE=0))\n"
    )


def test_streamtap_native_0_turns_it_off(checkout: Path) -> None:
    status, sse = which_runs(checkout / "src", STREAMTAP_NATIVE="0")
    assert status == "pure Python (STREAMTAP_NATIVE=0)"
    assert sse.endswith("sse.py")


@pytest.mark.parametrize(
    "change",
    ["python", "a module missing", "a file missing", "not json"],
)
def test_a_manifest_that_does_not_fit_is_not_used(checkout: Path, change: str) -> None:
    assert BUILD is not None
    path = checkout / "build" / "native" / BUILD.name / native.MANIFEST
    manifest = json.loads(path.read_text())
    if change == "python":
        manifest["python"] = "3.12.0 (another build)"
    elif change == "a module missing":
        del manifest["sources"]["chat"]
    elif change == "a file missing":
        (path.parent / manifest["files"]["streamtap.tap"]).unlink()
    path.write_text("{" if change == "not json" else json.dumps(manifest))
    status, sse = which_runs(checkout / "src")
    assert status.startswith("pure Python")
    assert sse.endswith("sse.py")


def test_an_installed_package_has_no_build_dir(tmp_path: Path) -> None:
    package = tmp_path / "site-packages" / "streamtap"
    assert native.build_dir(package) is None
    assert native.build_dir(tmp_path / "src" / "streamtap") == tmp_path / "build" / "native" / (
        sys.implementation.cache_tag
    )


def test_the_worker_says_which_it_runs(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "streamtap.worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(frame(config(f"sqlite:///{tmp_path}/w.db")))
        proc.stdin.flush()
        assert proc.stdout.readline() == b"ready\n"
        _, said = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert f"streamtap: the worker's hot path is {native.status}" in said.decode()
