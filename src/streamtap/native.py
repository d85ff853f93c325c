"""The worker's hot modules compiled with mypyc, used only while they match the sources.

`native.main(["build"])` (`make native`, which `make install`'s users get through `make test`,
`make demo` and `make bench`) compiles `MODULES` into `build/native/<python>/` of a source checkout, with a
manifest of each source's SHA-256. `activate()`, run when the package is imported, serves those modules from
the compiled files only if every listed source still has its recorded hash (and the build is for this
Python): one edited source and the whole set is pure Python again, so a stale build can never stand in for
edited code. Compiled modules call each other directly, which is why it is all or nothing.

STREAMTAP_NATIVE=0 turns the compiled modules off. An installed wheel has none: it runs pure Python, the
same code, about a third slower in the worker's interpretation of each event.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

# What the worker runs for every event: decoding, SSE framing, the interpreters (each API's subclasses
# `semantics.EventInterpreter`, and an interpreted class cannot subclass a compiled one), the tap, records.
MODULES = (
    "decoding",
    "sse",
    "semantics",
    "chat",
    "anthropic_api",
    "responses_api",
    "interpreters",
    "records",
    "tap",
    "pipeline",
)
GROUP = "streamtap_native"  # mypyc's shared library for the set: streamtap_native__mypyc
PACKAGE = Path(__file__).resolve().parent
MANIFEST = "manifest.json"

# why the compiled modules are (not) in use, for the worker's start-up line and `streamtap --version`
# (set by `activate()`, which the package's import runs)
status = "pure Python"


def build_dir(package: Path = PACKAGE) -> Path | None:
    """Where a source checkout keeps its compiled modules (None for an installed package)."""
    if package.parent.name != "src":
        return None
    return package.parent.parent / "build" / "native" / sys.implementation.cache_tag


def _hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _libraries(directory: Path, manifest: dict[str, object]) -> dict[str, Path] | None:
    """Module name -> compiled file, if the manifest in `directory` matches the sources; else None."""
    hashes = manifest.get("sources")
    files = manifest.get("files")
    if manifest.get("python") != sys.version or not isinstance(hashes, dict) or not isinstance(files, dict):
        return None
    if sorted(hashes) != sorted(MODULES):
        return None
    for name, digest in hashes.items():
        source = PACKAGE / f"{name}.py"
        if not source.is_file() or _hash(source) != digest:
            return None
    out = {}
    for module, file in files.items():
        path = directory / str(file)
        if not path.is_file():
            return None
        out[str(module)] = path
    return out


class _Finder(importlib.abc.MetaPathFinder):
    """Serves the compiled modules (and their shared library) from the build directory."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        file = self.files.get(fullname)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)


def _current(directory: Path | None) -> dict[str, Path] | None:
    """The compiled modules' files in `directory`, if a build is there and matches the sources."""
    if directory is None:
        return None
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        return _libraries(directory, manifest) if isinstance(manifest, dict) else None
    except (OSError, ValueError):
        return None


def activate() -> str:
    """Use the compiled modules where a current build exists; returns (and keeps in `status`) which runs."""
    global status
    if any(isinstance(f, _Finder) for f in sys.meta_path):
        return status
    directory = build_dir()
    if os.environ.get("STREAMTAP_NATIVE", "").strip().lower() in ("0", "no", "off", "false"):
        status = "pure Python (STREAMTAP_NATIVE=0)"
        return status
    if directory is None or not (directory / MANIFEST).is_file():
        return status
    files = _current(directory)
    if files is None:
        status = "pure Python (the compiled modules are older than the sources; make native rebuilds them)"
        return status
    if any(f"streamtap.{name}" in sys.modules for name in MODULES):
        return status  # imported before us (cannot happen through the package): leave it as it is
    sys.meta_path.insert(0, _Finder(files))
    status = "compiled (mypyc)"
    return status


def build() -> Path:
    """Compile `MODULES` into `build_dir()` and write its manifest. Needs mypy (mypyc), setuptools and a C
    compiler; raises RuntimeError without a source checkout."""
    import shutil
    import tempfile

    from mypyc.build import mypycify
    from setuptools import setup

    directory = build_dir()
    if directory is None:
        raise RuntimeError("compiled modules are built in a source checkout (src/streamtap)")
    root = PACKAGE.parent.parent
    sources = {name: PACKAGE / f"{name}.py" for name in MODULES}
    hashes = {name: _hash(path) for name, path in sources.items()}
    with tempfile.TemporaryDirectory(prefix="streamtap-native-") as tmp:
        out = Path(tmp) / "lib"
        cwd = os.getcwd()
        os.chdir(root)  # mypy reads its settings from pyproject.toml, and names modules from src/
        try:
            extensions = mypycify(
                [str(path.relative_to(root)) for path in sources.values()],
                opt_level="3",
                group_name=GROUP,
                target_dir=str(Path(tmp) / "c"),
            )
            setup(
                name="streamtap-native",
                ext_modules=extensions,
                script_args=["-q", "build_ext", "--build-lib", str(out), "--build-temp", f"{tmp}/o"],
            )
        finally:
            os.chdir(cwd)
        # module name -> file: streamtap/sse.cpython-312-x86_64-linux-gnu.so is streamtap.sse
        files = {}
        for path in out.rglob("*.so"):
            relative = path.relative_to(out)
            files[".".join([*relative.parts[:-1], relative.name.split(".", 1)[0]])] = relative
        # a hash taken after compiling would miss an edit made meanwhile: the earlier one is the build's
        if any(_hash(path) != hashes[name] for name, path in sources.items()):
            raise RuntimeError("a source changed while it was compiled; build again")
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        for path in files.values():
            (directory / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(out / path, directory / path)
    manifest = {
        "python": sys.version,
        "sources": hashes,
        "files": {name: str(path) for name, path in sorted(files.items())},
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return directory


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["build"]:
        if _current(build_dir()) is not None:
            return 0
        try:
            directory = build()
        except Exception as e:  # a compiler or mypyc failure: pure Python still runs
            print(f"streamtap native: build failed ({type(e).__name__}: {e})", file=sys.stderr)
            return 1
        print(f"streamtap native: {len(MODULES)} modules compiled into {directory}")
        return 0
    if args == ["status"]:
        print(activate())
        return 0
    print('usage: streamtap.native.main(["build" | "status"])', file=sys.stderr)
    return 2
