"""Tests of :mod:`precomp_host.cli.commands`: bad input, ``--help``, progress, as a user sees them.

Bad input (issue #2) must end with exit code 2, exactly one line on stderr naming the problem
(no traceback, no log lines) and nothing at a final name in OUT. These run the real command in
a subprocess, so stderr is exactly what a terminal or a CI log would show.
"""

from __future__ import annotations

import io
import json
import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import tifffile

from precomp_host.cli.commands import COMMANDS, main
from precomp_host.cli.progress import ProgressView
from precomp_host.core.progress import Progress

if TYPE_CHECKING:
    from collections.abc import Callable

Args = list[str | os.PathLike[str]]

REPO = Path(__file__).resolve().parent.parent
# A progress log line: "<label>: 3/73 chunks (4%), 120 chunks/s, 1.2 MB written, ETA 0:02".
PROGRESS_LINE = re.compile(
    r" INFO (?P<label>\S+): (?P<done>\d+)/(?P<total>\d+) chunks \((?P<pct>\d+)%\), "
    r"(?P<rate>[\d,.]+) chunks/s, [\d.]+ [KMGT]?B written, (?P<when>ETA|done in) \d+:\d\d"
)


def _env() -> dict[str, str]:
    # No .pyc writes: under RLIMIT_FSIZE they would fail; keep the interpreter's own I/O out.
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}


def run_cli(
    *args: str | os.PathLike[str],
    preexec_fn: Callable[[], None] | None = None,
    timeout: float = 120,
    env: dict[str, str | None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``precomp-host ARGS`` in a process; ``env`` adds variables (None: removes one)."""
    full = _env()
    for name, value in (env or {}).items():
        if value is None:
            full.pop(name, None)
        else:
            full[name] = value
    return subprocess.run(
        [sys.executable, "-m", "precomp_host", *map(str, args)],
        capture_output=True,
        text=True,
        env=full,
        timeout=timeout,
        preexec_fn=preexec_fn,
        check=False,
    )


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> content); {} when absent."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def assert_bad_input(
    result: subprocess.CompletedProcess[str], *mentions: str | os.PathLike[str]
) -> str:
    """Exit 2 and exactly one line on stderr, naming each of ``mentions``; returns the line."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    line = lines[0]
    assert line.startswith("precomp-host"), line
    assert "error" in line, line
    for m in mentions:
        assert str(m) in line, f"{m!r} not in {line!r}"
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stdout == "", result.stdout
    return line


def assert_nothing_written(out: Path) -> None:
    """OUT was not created, or is an empty folder: no file at any final name."""
    if out.exists():
        assert out.is_dir()
        assert list(out.iterdir()) == [], sorted(str(p) for p in out.rglob("*"))


# -- inputs ----------------------------------------------------------------------------------


def _slices(
    folder: Path, n: int = 3, shape: tuple[int, ...] = (8, 9), dtype: str = "uint8"
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        tifffile.imwrite(folder / f"z{i}.tif", np.full(shape, i, dtype))
    return folder


def _npy(path: Path, shape: tuple[int, ...] = (4, 8, 8), dtype: str = "uint8") -> Path:
    np.save(path, np.ones(shape, dtype))
    return path


def _missing(tmp: Path) -> tuple[Args, list[str]]:
    return [tmp / "no-such-stack"], [str(tmp / "no-such-stack")]


def _empty_folder(tmp: Path) -> tuple[Args, list[str]]:
    (tmp / "empty").mkdir()
    return [tmp / "empty"], [str(tmp / "empty")]


def _glob_nothing(tmp: Path) -> tuple[Args, list[str]]:
    _slices(tmp / "s")
    return [str(tmp / "s" / "img*.tif")], [str(tmp / "s" / "img*.tif")]


def _shapes(tmp: Path) -> tuple[Args, list[str]]:
    folder = _slices(tmp / "s")
    tifffile.imwrite(folder / "z10.tif", np.zeros((8, 10), np.uint8))
    return [folder], [str(folder / "z10.tif"), "shape"]


def _dtypes(tmp: Path) -> tuple[Args, list[str]]:
    folder = _slices(tmp / "s")
    tifffile.imwrite(folder / "z3.tif", np.zeros((8, 9), np.uint16))
    return [folder], [str(folder / "z3.tif"), "dtype"]


def _non_image(tmp: Path) -> tuple[Args, list[str]]:
    folder = _slices(tmp / "s")
    (folder / "notes.txt").write_text("scope settings\n")
    return [folder], [str(folder / "notes.txt")]


def _garbage_tif(tmp: Path) -> tuple[Args, list[str]]:
    folder = _slices(tmp / "s")
    (folder / "z1.tif").write_bytes(b"GIF89a" + bytes(range(256)) * 4)
    return [folder], [str(folder / "z1.tif")]


def _truncated_tif(tmp: Path) -> tuple[Args, list[str]]:
    path = tmp / "stack.tif"
    tifffile.imwrite(path, np.zeros((6, 16, 16), np.uint16), photometric="minisblack")
    path.write_bytes(path.read_bytes()[:200])
    return [path], [str(path)]


def _zero_byte_tif(tmp: Path) -> tuple[Args, list[str]]:
    (tmp / "stack.tif").touch()
    return [tmp / "stack.tif"], [str(tmp / "stack.tif"), "empty"]


def _zero_byte_npy(tmp: Path) -> tuple[Args, list[str]]:
    (tmp / "vol.npy").touch()
    return [tmp / "vol.npy"], [str(tmp / "vol.npy"), "empty"]


def _npy_not_array(tmp: Path) -> tuple[Args, list[str]]:
    (tmp / "vol.npy").write_text("[[1, 2], [3, 4]]\n")
    return [tmp / "vol.npy"], [str(tmp / "vol.npy")]


def _dtype_case(dtype: str) -> Callable[[Path], tuple[Args, list[str]]]:
    def make(tmp: Path) -> tuple[Args, list[str]]:
        return [_npy(tmp / "vol.npy", dtype=dtype)], [dtype]

    return make


def _int64_tiff(tmp: Path) -> tuple[Args, list[str]]:
    path = tmp / "stack.tif"
    tifffile.imwrite(path, np.zeros((4, 8, 8), np.int64), photometric="minisblack")
    return [path], ["int64"]


def _encoding_case(
    encoding: str, shape: tuple[int, ...], dtype: str, mention: str
) -> Callable[[Path], tuple[Args, list[str]]]:
    def make(tmp: Path) -> tuple[Args, list[str]]:
        return [_npy(tmp / "vol.npy", shape, dtype), "--encoding", encoding], [encoding, mention]

    return make


def _option_case(*options: str, mention: str) -> Callable[[Path], tuple[Args, list[str]]]:
    def make(tmp: Path) -> tuple[Args, list[str]]:
        return [_npy(tmp / "vol.npy"), *options], [mention]

    return make


BAD_INPUT = {
    "missing source": _missing,
    "empty folder": _empty_folder,
    "glob matching nothing": _glob_nothing,
    "slices of different shapes": _shapes,
    "slices of different dtypes": _dtypes,
    "non-image file among slices": _non_image,
    "garbage named .tif among slices": _garbage_tif,
    "truncated TIFF": _truncated_tif,
    "zero-byte TIFF": _zero_byte_tif,
    "zero-byte npy": _zero_byte_npy,
    "npy that is not an array": _npy_not_array,
    "complex64 npy": _dtype_case("complex64"),
    "bool npy": _dtype_case("bool"),
    "float64 npy": _dtype_case("float64"),
    "int64 TIFF": _int64_tiff,
    "jpeg on uint16": _encoding_case("jpeg", (4, 8, 8), "uint16", "uint8"),
    "png on uint16": _encoding_case("png", (4, 8, 8), "uint16", "uint8"),
    "png on float32": _encoding_case("png", (4, 8, 8), "float32", "uint8"),
    "jpeg on 2 channels": _encoding_case("jpeg", (4, 8, 8, 2), "uint8", "channels, got 2"),
    "png on 2 channels": _encoding_case("png", (4, 8, 8, 2), "uint8", "channels, got 2"),
    "png on 4 channels": _encoding_case("png", (4, 8, 8, 4), "uint8", "channels, got 4"),
}
# Options replace the default "--resolution 4 4 40".
BAD_OPTIONS = {
    "zero resolution": _option_case("--resolution", "0", "4", "40", mention="--resolution"),
    "negative resolution": _option_case("--resolution", "4", "-4", "40", mention="--resolution"),
    "non-integer voxel offset": _option_case(
        "--voxel-offset", "1.5", "0", "0", mention="--voxel-offset"
    ),
    "nan resolution": _option_case("--resolution", "nan", "4", "40", mention="--resolution"),
    "inf resolution": _option_case("--resolution", "4", "4", "inf", mention="--resolution"),
    "text resolution": _option_case("--resolution", "4", "four", "40", mention="--resolution"),
    "two resolutions": _option_case("--resolution", "4", "4", mention="--resolution"),
    "no resolution": _option_case(mention="--resolution"),
    "zero chunk size": _option_case(
        "--resolution", "4", "4", "40", "--chunk-size", "0", mention="--chunk-size"
    ),
    "negative chunk size": _option_case(
        "--resolution", "4", "4", "40", "--chunk-size", "-64", mention="--chunk-size"
    ),
    "zero chunk size in z": _option_case(
        "--resolution", "4", "4", "40", "--chunk-size", "64", "64", "0", mention="--chunk-size"
    ),
    "jpeg quality above 100": _option_case(
        "--resolution",
        "4",
        "4",
        "40",
        "--encoding",
        "jpeg",
        "--jpeg-quality",
        "101",
        mention="quality",
    ),  # fmt: skip
    "two chunk sizes": _option_case(
        "--resolution", "4", "4", "40", "--chunk-size", "64", "64", mention="--chunk-size"
    ),
    "shard size without --sharded": _option_case(
        "--resolution", "4", "4", "40", "--shard-size", "2GB", mention="--sharded"
    ),
    "sharded with a chunk layout": _option_case(
        "--resolution", "4", "4", "40", "--sharded", "--layout", "flat", mention="--layout"
    ),
    "shard size that is not a size": _option_case(
        "--resolution", "4", "4", "40", "--sharded", "--shard-size", "2XB", mention="2XB"
    ),
}


@pytest.mark.parametrize("name", list(BAD_INPUT))
@pytest.mark.slow  # real processes
def test_bad_input_one_line_exit_2_nothing_written(tmp_path: Path, name: str) -> None:
    args, mentions = BAD_INPUT[name](tmp_path)
    out = tmp_path / "out"
    result = run_cli("build", *args, out, "--resolution", "4", "4", "40")
    assert_bad_input(result, *mentions)
    assert_nothing_written(out)


@pytest.mark.parametrize("name", list(BAD_OPTIONS))
@pytest.mark.slow  # real processes
def test_bad_option_one_line_exit_2_nothing_written(tmp_path: Path, name: str) -> None:
    args, mentions = BAD_OPTIONS[name](tmp_path)
    src, options = args[0], args[1:]
    out = tmp_path / "out"
    result = run_cli("build", src, out, *options)
    assert_bad_input(result, *mentions)
    assert_nothing_written(out)


@pytest.mark.slow  # a real process
def test_sharded_build_prints_its_plan(tmp_path: Path) -> None:
    src, out = _npy(tmp_path / "vol.npy", (40, 70, 70)), tmp_path / "out"
    options = ("--chunk-size", "16", "--sharded", "--shard-size", "16KiB")
    result = run_cli("build", src, out, "--resolution", "4", "4", "40", *options)
    assert result.returncode == 0, result.stderr
    # 16 KiB holds four 4 KiB chunks: 2 x 2 x 1 a shard at scale 0 (Morton order: x, y, z).
    assert "scale 4_4_40: 27 shards, up to 4 chunks per shard (2 x 2 x 1), 75 chunks" in (
        result.stdout
    )
    for scale in json.loads((out / "info").read_text())["scales"]:
        files = len(list((out / scale["key"]).iterdir()))
        assert f"scale {scale['key']}: {files} shards," in result.stdout


# -- the output folder -----------------------------------------------------------------------


def _build_ok(src: Path, out: Path, *options: str) -> None:
    result = run_cli("build", src, out, "--resolution", "4", "4", "40", "-q", *options)
    assert result.returncode == 0, result.stderr
    assert (out / "info").is_file()


@pytest.mark.slow  # real processes
def test_output_folder_not_empty(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    before = _snapshot(out)
    result = run_cli("build", _npy(tmp_path / "v.npy"), out, "--resolution", "4", "4", "40")
    line = assert_bad_input(result, out, "not empty")
    assert "--overwrite" in line
    assert _snapshot(out) == before


@pytest.mark.slow  # real processes
def test_output_holding_a_dataset_needs_overwrite(tmp_path: Path) -> None:
    src, out = _npy(tmp_path / "v.npy"), tmp_path / "out"
    _build_ok(src, out)
    before = _snapshot(out)
    result = run_cli("build", src, out, "--resolution", "4", "4", "40")
    assert_bad_input(result, out)
    assert _snapshot(out) == before
    # With --overwrite it is replaced.
    _build_ok(src, out, "--overwrite")


@pytest.mark.slow  # real processes
def test_overwrite_refuses_a_folder_that_is_not_a_dataset(tmp_path: Path) -> None:
    out = tmp_path / "home"
    (out / "docs").mkdir(parents=True)
    (out / "docs" / "notes.md").write_text("keep me")
    (out / "photo.tif").write_bytes(b"II*\x00")
    before = _snapshot(out)
    result = run_cli(
        "build", _npy(tmp_path / "v.npy"), out, "--resolution", "4", "4", "40", "--overwrite"
    )
    assert_bad_input(result, out, "not a precomputed dataset")
    assert _snapshot(out) == before


@pytest.mark.slow  # real processes
def test_resume_with_nothing_to_resume(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "readme.txt").write_text("not a build")
    before = _snapshot(out)
    result = run_cli(
        "build", _npy(tmp_path / "v.npy"), out, "--resolution", "4", "4", "40", "--resume"
    )
    assert_bad_input(result, out, "nothing to resume")
    assert _snapshot(out) == before


@pytest.mark.slow  # real processes
def test_resume_with_other_settings_is_refused(tmp_path: Path) -> None:
    src, out = _npy(tmp_path / "v.npy"), tmp_path / "out"
    _build_ok(src, out)
    before = _snapshot(out)
    result = run_cli("build", src, out, "--resolution", "8", "8", "40", "--resume")
    assert_bad_input(result, out, "other settings")
    assert _snapshot(out) == before


@pytest.mark.slow  # real processes
def test_output_is_a_file(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    out.write_text("a file")
    result = run_cli("build", _npy(tmp_path / "v.npy"), out, "--resolution", "4", "4", "40")
    assert_bad_input(result, out)
    assert out.read_text() == "a file"


@pytest.mark.slow  # real processes
def test_output_path_through_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file where a folder should be")
    out = blocker / "out"
    result = run_cli("build", _npy(tmp_path / "v.npy"), out, "--resolution", "4", "4", "40")
    assert_bad_input(result, out)
    assert blocker.read_text() == "a file where a folder should be"


# -- failures found mid-build ----------------------------------------------------------------


def _stack_with_late_corrupt_slice(tmp: Path) -> tuple[Path, Path]:
    """48 slices whose 41st has an intact header but truncated pixel data: nothing about
    it can be seen until the build reads that slab, after writing chunks of earlier slabs."""
    folder = tmp / "stack"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(48):
        tifffile.imwrite(folder / f"z{i}.tif", rng.integers(0, 255, (32, 32), np.uint8))
    bad = folder / "z40.tif"
    data = bad.read_bytes()
    with tifffile.TiffFile(bad) as tif:
        data_offset = tif.pages[0].dataoffsets[0]
    bad.write_bytes(data[: data_offset + 100])  # header and IFD intact, pixels cut
    return folder, bad


@pytest.mark.parametrize("quiet", [True, False])
@pytest.mark.slow  # real processes
def test_corrupt_pixel_data_found_mid_build(tmp_path: Path, quiet: bool) -> None:
    folder, bad = _stack_with_late_corrupt_slice(tmp_path)
    out = tmp_path / "out"
    args: Args = ["build", folder, out, "--resolution", "4", "4", "40", "--chunk-size", "16"]
    result = run_cli(*args, *(["-q"] if quiet else []))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    if not quiet:
        # Progress lines of the chunks written before the bad slab may precede the error;
        # they are the build's normal output, and they must be the only other lines.
        assert all(PROGRESS_LINE.search(line) for line in lines[:-1]), result.stderr
        lines = lines[-1:]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("precomp-host: error:")
    assert str(bad) in lines[0]
    assert_nothing_written(out)


def _full_disk(limit: int) -> Callable[[], None]:
    def preexec() -> None:
        # Writes beyond `limit` bytes per file fail with EFBIG (instead of killing the
        # process with SIGXFSZ): the same errno path as a full disk (ENOSPC).
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


@pytest.mark.slow  # real processes
def test_full_disk(tmp_path: Path) -> None:
    # z 0-31 compress to a few bytes, z 32-63 are noise stored plain (32 KiB chunks): the
    # first chunk row is written, the second cannot be.
    vol = np.zeros((64, 64, 64), np.uint8)
    vol[32:] = np.random.default_rng(2).integers(0, 255, (32, 64, 64), np.uint8)
    src = tmp_path / "vol.npy"
    np.save(src, vol)
    out = tmp_path / "out"
    result = run_cli(
        "build",
        src,
        out,
        "--resolution",
        "4",
        "4",
        "4",
        "--chunk-size",
        "32",
        "--workers",
        "2",
        "-q",
        preexec_fn=_full_disk(16 * 1024),
    )
    line = assert_bad_input(result)
    assert "disk full" in line
    assert not (out / "info").exists()
    assert_nothing_written(out)


@pytest.mark.slow  # real processes
def test_after_a_full_disk_a_rerun_succeeds(tmp_path: Path) -> None:
    # The failed run left an empty folder, which is fine to build into (with or without
    # --resume) once there is space again.
    vol = np.zeros((64, 64, 64), np.uint8)
    vol[32:] = np.random.default_rng(3).integers(0, 255, (32, 64, 64), np.uint8)
    src = tmp_path / "vol.npy"
    np.save(src, vol)
    out = tmp_path / "out"
    args: Args = ["build", src, out, "--resolution", "4", "4", "4", "--chunk-size", "32", "-q"]
    assert run_cli(*args, preexec_fn=_full_disk(16 * 1024)).returncode == 2
    assert_nothing_written(out)
    second = run_cli(*args, "--resume")
    assert second.returncode == 0, second.stderr
    assert (out / "info").is_file()


# -- --help and progress ---------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["--help"], *([c, "--help"] for c in COMMANDS)])
@pytest.mark.slow  # real processes
def test_help_does_not_import_numpy(argv: list[str]) -> None:
    code = (
        "import sys\n"
        "from precomp_host.cli.commands import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "heavy = ('numpy', 'tifffile', 'PIL', 'tensorstore', 'watchdog', 'jinja2', 'brotli')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stderr, result.stderr
    assert "usage: precomp-host" in result.stdout


@pytest.mark.slow  # real processes
def test_build_help_lists_the_options() -> None:
    result = run_cli("build", "--help")
    assert result.returncode == 0
    options = "--resolution --chunk-size --encoding --layout --compress --keep-identity"
    for option in (*options.split(), "--workers", "--resume", "--overwrite", "--voxel-offset"):
        assert option in result.stdout


@pytest.mark.slow  # real processes
def test_progress_log_lines_when_not_a_terminal(tmp_path: Path) -> None:
    # 64^3 in 16^3 chunks: 64 + 8 + 1 = 73 chunks over three scales.
    src = tmp_path / "vol.npy"
    np.save(src, np.random.default_rng(4).integers(0, 255, (64, 64, 64), np.uint8))
    out = tmp_path / "out"
    result = run_cli(
        "build", src, out, "--resolution", "4", "4", "4", "--chunk-size", "16", "--workers", "2"
    )
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr  # no bar drawn into a log
    matches = [m for m in map(PROGRESS_LINE.search, result.stderr.splitlines()) if m]
    # At least the first report and the last; how many in between depends on the machine.
    assert len(matches) >= 2, result.stderr
    totals = {int(m["total"]) for m in matches}
    assert totals == {73}
    done = [int(m["done"]) for m in matches]
    assert done == sorted(done)
    assert done[-1] == 73
    assert matches[-1]["when"] == "done in"
    assert all(m["when"] == "ETA" for m in matches[:-1])
    assert all(m["label"] == "out" for m in matches)
    # Periodic, not one per chunk.
    assert len(matches) <= 15
    assert str(out) in result.stdout  # the closing "Wrote OUT" line goes to stdout


@pytest.mark.slow  # real processes
def test_quiet_build_prints_nothing_on_stderr(tmp_path: Path) -> None:
    src = _npy(tmp_path / "v.npy", (8, 16, 16))
    result = run_cli("build", src, tmp_path / "out", "--resolution", "4", "4", "40", "-q")
    assert result.returncode == 0
    assert result.stderr == ""


# -- in-process ------------------------------------------------------------------------------


def test_main_returns_2_with_one_line_in_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.tif"
    code = main(["build", str(missing), str(tmp_path / "out"), "--resolution", "1", "1", "1"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err == f"precomp-host: error: {missing}: no such file or folder\n"
    assert captured.out == ""
    assert not (tmp_path / "out").exists()


def test_argument_errors_exit_2_with_one_line_in_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["build", "src", str(tmp_path / "out"), "--resolution", "1", "0", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--resolution" in err
    assert "usage:" not in err


# -- ProgressView, in-process ----------------------------------------------------------------


def test_progress_view_draws_a_bar_with_rate_and_eta_on_a_tty(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]  # the redraw throttle reads time.monotonic(); make it deterministic
    monkeypatch.setattr("precomp_host.cli.progress.time.monotonic", lambda: clock[0])
    stream = io.StringIO()
    view = ProgressView(stream, "img", tty=True)
    view(Progress(done=5, total=10, bytes_written=2_500_000, elapsed=2.5))
    first = stream.getvalue()
    assert first.startswith("\rimg [")
    assert "[" + "#" * 15 + "-" * 15 + "]" in first
    assert "5/10 chunks" in first
    assert "50%" in first
    assert "2/s" in first  # 5 chunks in 2.5 s
    assert "2.5 MB" in first
    assert "ETA 0:02" in first  # 5 left at 2/s
    assert not first.endswith("\n")  # the next draw overwrites this line
    # Throttled to ~10 Hz: an update 50 ms later is not drawn, one 200 ms later is ...
    clock[0] += 0.05
    view(Progress(done=6, total=10, bytes_written=3_000_000, elapsed=2.55))
    assert stream.getvalue() == first
    clock[0] += 0.15
    view(Progress(done=7, total=10, bytes_written=3_500_000, elapsed=2.7))
    second = stream.getvalue()[len(first) :]
    assert second.startswith("\rimg [")
    assert "7/10 chunks" in second
    first += second
    clock[0] += 0.01
    # ... but the last one always is, ending the line.
    view(Progress(done=10, total=10, bytes_written=5_000_000, elapsed=65.0))
    last = stream.getvalue()[len(first) :]
    assert last.startswith("\rimg [" + "#" * 30 + "]")
    assert "10/10 chunks" in last
    assert "100%" in last
    assert "in 1:05" in last
    assert "ETA" not in last
    assert last.endswith("\n")


def test_progress_view_says_what_happened_to_the_bytes() -> None:
    # A build writes its bytes; the doctor reads them (its bar once said "written").
    built, checked = io.StringIO(), io.StringIO()
    ProgressView(built, "img", tty=True)(Progress(1, 2, 1_000, 1.0))
    ProgressView(checked, "check", tty=True, moved="read")(Progress(1, 2, 1_000, 1.0))
    assert "1.0 KB written" in built.getvalue()
    assert "1.0 KB read" in checked.getvalue()
    assert "written" not in checked.getvalue()


def test_progress_view_eta_in_hours() -> None:
    stream = io.StringIO()
    ProgressView(stream, "big", tty=True)(Progress(1, 10_000, 0, 1.0))
    assert "ETA 2:46:39" in stream.getvalue()  # 9999 s


def test_progress_view_logs_periodically_without_a_tty(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    view = ProgressView(stream, "img", tty=False)
    caplog.set_level("INFO", logger="precomp_host")
    for done in range(1, 101):
        view(Progress(done=done, total=100, bytes_written=done * 1000, elapsed=done / 10))
    assert stream.getvalue() == ""  # logging, not drawing
    messages = [r.getMessage() for r in caplog.records if r.name == "precomp_host"]
    assert 2 <= len(messages) <= 12  # about one per tenth, not one per chunk
    assert messages[0].startswith("img: 1/100 chunks (1%), 10 chunks/s")
    assert "ETA 0:09" in messages[0]
    assert messages[-1].startswith("img: 100/100 chunks (100%)")
    assert "done in 0:10" in messages[-1]


def test_negative_voxel_offset_is_accepted(tmp_path: Path) -> None:
    src = _npy(tmp_path / "vol.npy", (4, 8, 8))
    args = ["build", str(src), str(tmp_path / "ds"), "--resolution", "1", "1", "1",
            "--voxel-offset", "-8", "0", "-2", "-q"]  # fmt: skip
    assert main(args) == 0
    info = json.loads((tmp_path / "ds" / "info").read_text())
    assert info["scales"][0]["voxel_offset"] == [-8, 0, -2]
    assert list((tmp_path / "ds" / info["scales"][0]["key"]).glob("-8-0/0-8/-2-2*"))


def test_deploy_command_writes_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    (root / "ds").mkdir(parents=True)
    (root / "ds" / "info").write_text(
        '{"type": "image", "data_type": "uint8", '
        '"num_channels": 1, "scales": [{"key": "1_1_1", '
        '"size": [1, 1, 1], "resolution": [1, 1, 1], '
        '"chunk_sizes": [[1, 1, 1]], "encoding": "raw"}]}'
    )
    assert main(["deploy", "nginx", str(root), "--out", str(tmp_path / "out"), "-q"]) == 0
    conf = (tmp_path / "out" / "nginx.conf").read_text()
    assert str(root) in conf
    assert (root / "index.html").exists()
    # What to do next: a snippet goes inside an existing server block.
    out = capsys.readouterr().out
    assert f"include {(tmp_path / 'out' / 'nginx.conf').resolve()};" in out
    assert "nginx -t && " in out  # sudo and systemctl only where they apply (test_deploy.py)


@pytest.mark.slow
def test_serve_command_serves_until_interrupted(tmp_path: Path) -> None:
    import http.client
    import urllib.parse

    (tmp_path / "ds").mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "precomp_host", "serve", str(tmp_path), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        # as Ctrl+C finds it in a terminal (a background test run inherits SIGINT ignored)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = urllib.parse.urlsplit(line.split(" at ")[1].split()[0])
        conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert resp.status == 200
        resp.read()
        conn.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) in (0, 130)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


# -- deploy and serve: every failure one line, before any file is written ----------------------

_INFO = (
    '{"type": "image", "data_type": "uint8", "num_channels": 1, "scales": [{"key": "1_1_1", '
    '"size": [1, 1, 1], "resolution": [1, 1, 1], "chunk_sizes": [[1, 1, 1]], "encoding": "raw"}]}'
)
#: No credentials anywhere botocore looks (and no instance-metadata lookup, which waits).
_NO_AWS: dict[str, str | None] = {
    "AWS_ACCESS_KEY_ID": None,
    "AWS_SECRET_ACCESS_KEY": None,
    "AWS_SESSION_TOKEN": None,
    "AWS_PROFILE": None,
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials",
    "AWS_CONFIG_FILE": "/nonexistent/config",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_DEFAULT_REGION": "us-east-1",
}
_FAKE_AWS = {**_NO_AWS, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def _site(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "ds").mkdir(parents=True)
    (root / "ds" / "info").write_text(_INFO)
    return root


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _no_boto3(tmp_path: Path) -> dict[str, str | None]:
    """An interpreter where ``import boto3`` fails, as without the ``s3`` extra."""
    shadow = tmp_path / "no-boto3"
    shadow.mkdir()
    (shadow / "boto3.py").write_text("raise ModuleNotFoundError(\"No module named 'boto3'\")\n")
    return {**_FAKE_AWS, "PYTHONPATH": f"{shadow}{os.pathsep}{_env()['PYTHONPATH']}"}


DeployCase = tuple[list[str], dict[str, "str | None"], str]
DEPLOY_FAILURES: dict[str, Callable[[Path], DeployCase]] = {
    "s3 without --bucket": lambda t: (["s3"], {}, "--bucket"),
    "gcs without --bucket": lambda t: (["gcs"], {}, "--bucket"),
    "s3 without boto3": lambda t: (["s3", "--bucket", "lab"], _no_boto3(t), "pip install"),
    "s3 without credentials": lambda t: (
        ["s3", "--bucket", "lab", "--endpoint-url", f"http://127.0.0.1:{_closed_port()}"],
        _NO_AWS,
        "credentials",
    ),
    "s3 endpoint not answering": lambda t: (
        ["s3", "--bucket", "lab", "--endpoint-url", f"http://127.0.0.1:{_closed_port()}"],
        _FAKE_AWS,
        "127.0.0.1",
    ),
    "s3 endpoint not a URL": lambda t: (
        ["s3", "--bucket", "lab", "--endpoint-url", "not a url"],
        _FAKE_AWS,
        "--endpoint-url",
    ),
    "nginx --listen port out of range": lambda t: (["nginx", "--listen", "*:99999"], {}, "99999"),
    "nginx --listen without a port": lambda t: (
        ["nginx", "--listen", "localhost:"],
        {},
        "--listen",
    ),
    "apache --listen not a number": lambda t: (["apache", "--listen", "eighty"], {}, "--listen"),
}


@pytest.mark.parametrize("name", list(DEPLOY_FAILURES))
@pytest.mark.slow  # real processes
def test_deploy_failure_one_line_exit_2_nothing_written(tmp_path: Path, name: str) -> None:
    root = _site(tmp_path)
    args, env, mention = DEPLOY_FAILURES[name](tmp_path)
    out = tmp_path / "out"
    result = run_cli("deploy", args[0], root, "--out", out, *args[1:], env=env, timeout=60)
    assert_bad_input(result, mention)
    assert_nothing_written(out)
    assert not (root / "index.html").exists()


@pytest.mark.slow  # a moto server
def test_deploy_s3_to_a_missing_bucket_is_one_line(tmp_path: Path) -> None:
    from tests.realservers import MOTO_ENV, moto_server

    root = _site(tmp_path)
    out = tmp_path / "out"
    with moto_server() as endpoint:
        result = run_cli(
            "deploy", "s3", root, "--out", out, "--bucket", "nope", "--endpoint-url", endpoint,
            env={**_NO_AWS, **MOTO_ENV}, timeout=60,
        )  # fmt: skip
    assert_bad_input(result, "s3://nope", "no such bucket")
    assert_nothing_written(out)
    assert not (root / "index.html").exists()


@pytest.mark.parametrize("public", [False, True])
def test_deploy_gcs_makes_the_bucket_public_only_when_asked(tmp_path: Path, public: bool) -> None:
    root = _site(tmp_path)
    out = tmp_path / "out"
    argv = ["deploy", "gcs", str(root), "--out", str(out), "--bucket", "lab", "-q"]
    assert main(argv + ["--public"] * public) == 0
    script = (out / "gcloud-upload.sh").read_text()
    assert ("--member=allUsers" in script) is public
    assert "gs://lab" in script


@pytest.mark.parametrize(
    ("option", "mention"),
    [
        (["--port", "99999"], "99999"),
        (["--port", "-1"], "--port"),
        (["--port", "http"], "--port"),
        (["--host", "no such host.invalid"], "--host"),
    ],
)
@pytest.mark.slow  # real processes
def test_serve_bad_address_one_line_exit_2(tmp_path: Path, option: list[str], mention: str) -> None:
    root = _site(tmp_path)
    result = run_cli("serve", root, *option, timeout=60)
    assert_bad_input(result, mention)
