"""The output folder: --overwrite replaces in one step, one build per folder, no leftovers.

Each test here failed on the code before the output folder had its own module (issue 11):
``--overwrite`` emptied OUT first, a failed fresh build left an empty folder, concurrent builds
tore each other's output, and a source inside OUT was deleted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from werkzeug.test import Client

from precomp_host.build.builder import BuildError, BuildOptions, build_dataset
from precomp_host.build.sources import SourceError, volume_from_array
from precomp_host.host.middleware import PrecomputedMiddleware

REPO = Path(__file__).resolve().parent.parent
OPTIONS = BuildOptions(resolution=(4.0, 4.0, 4.0), chunk_size=(16, 16, 16))


def _array(seed: int, shape: tuple[int, int, int] = (40, 48, 56)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random(shape) * 50 + np.arange(shape[2])).astype(np.uint8)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


class _SlowVolume:
    """A volume that reads slowly (so a poller sees the whole build) and may fail mid-way."""

    def __init__(self, array: np.ndarray, *, fail_at: int | None = None) -> None:
        self.inner = volume_from_array(array)
        self.shape, self.dtype = self.inner.shape, self.inner.dtype
        self.num_channels = self.inner.num_channels
        self.fail_at = fail_at

    def read(self, z0: int, z1: int) -> np.ndarray:
        time.sleep(0.15)
        if self.fail_at is not None and z1 > self.fail_at:
            raise SourceError(f"slice {self.fail_at}: truncated")
        return self.inner.read(z0, z1)


class _Poller(threading.Thread):
    """GETs ``info`` and one chunk of ``ds`` through the middleware (no resolution cache) until
    stopped, keeping each status and body."""

    URLS = {"/ds/info": "info", "/ds/4_4_4/16-32_16-32_0-16": "4_4_4/16-32/16-32/0-16.gz"}

    def __init__(self, root: Path) -> None:
        super().__init__(daemon=True)
        self.client = Client(PrecomputedMiddleware(None, root))
        self.seen: list[tuple[str, int, bytes]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for url, path in self.URLS.items():
                r = self.client.get(url, headers={"Accept-Encoding": "gzip"})
                self.seen.append((path, r.status_code, r.get_data()))
                r.close()

    def bodies_not_in(self, *trees: dict[str, bytes]) -> list[tuple[str, int]]:
        return [(p, status) for p, status, body in self.seen
                if status != 200 or all(body != t[p] for t in trees)]  # fmt: skip


@pytest.mark.parametrize("outcome", ["succeeds", "fails"])
def test_overwrite_keeps_the_old_dataset_served_until_the_new_one_is_complete(
    tmp_path: Path, outcome: str
) -> None:
    out = tmp_path / "ds"
    build_dataset(volume_from_array(_array(1)), out, OPTIONS)
    before = _tree(out)
    build_dataset(volume_from_array(_array(2)), tmp_path.parent / f"{tmp_path.name}-ref", OPTIONS)
    after = _tree(tmp_path.parent / f"{tmp_path.name}-ref")
    assert before["4_4_4/16-32/16-32/0-16.gz"] != after["4_4_4/16-32/16-32/0-16.gz"]
    poller = _Poller(tmp_path)
    poller.start()
    new = _SlowVolume(_array(2), fail_at=30 if outcome == "fails" else None)
    overwrite = BuildOptions(resolution=(4.0, 4.0, 4.0), chunk_size=(16, 16, 16), overwrite=True)
    try:
        time.sleep(0.1)
        if outcome == "fails":
            with pytest.raises(BuildError, match="truncated"):
                build_dataset(new, out, overwrite)
        else:
            build_dataset(new, out, overwrite)
        time.sleep(0.1)
    finally:
        poller.stop.set()
        poller.join()
    assert len(poller.seen) > 20
    siblings = sorted(p.name for p in tmp_path.iterdir())
    assert siblings == ["ds"], "no staging folder or lock file left beside OUT"
    if outcome == "fails":
        assert poller.bodies_not_in(before) == [], "served the old bytes throughout"
        assert _tree(out) == before, "a failed overwrite leaves the old dataset byte for byte"
    else:
        assert poller.bodies_not_in(before, after) == [], "old bytes, then new ones, never a 404"
        served = [body for p, _, body in poller.seen if p.endswith(".gz")]
        assert served[0] == before["4_4_4/16-32/16-32/0-16.gz"]
        assert served[-1] == after["4_4_4/16-32/16-32/0-16.gz"]
        assert _tree(out) == after


def _race(
    out: Path, arrays: list[np.ndarray], options: BuildOptions
) -> tuple[dict[int, int], list[str]]:
    """Build each array into ``out`` at once; the exit code each would get, and the errors."""
    codes: dict[int, int] = {}
    errors: list[str] = []
    start = threading.Barrier(len(arrays))

    def run(i: int) -> None:
        start.wait()
        try:
            build_dataset(volume_from_array(arrays[i]), out, options)
            codes[i] = 0
        except BuildError as e:  # what the CLI turns into exit code 2
            codes[i] = 2
            errors.append(str(e))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(arrays))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return codes, errors


def test_concurrent_overwrites_end_in_one_complete_dataset(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    arrays = [_array(s, (20, 24, 28)) for s in (1, 2, 3)]
    expected = []
    for i, a in enumerate(arrays):
        build_dataset(volume_from_array(a), tmp_path / f"ref{i}", OPTIONS)
        expected.append(_tree(tmp_path / f"ref{i}"))
    build_dataset(volume_from_array(arrays[0]), out, OPTIONS)
    overwrite = BuildOptions(resolution=(4.0, 4.0, 4.0), chunk_size=(16, 16, 16), overwrite=True)
    for _ in range(30):
        codes, errors = _race(out, [arrays[1], arrays[2]], overwrite)
        tree = _tree(out)
        winners = [i + 1 for i, code in codes.items() if code == 0]
        assert winners, f"one build must win: {errors}"
        assert tree in [expected[i] for i in winners], "OUT is the complete dataset of a winner"
        assert all("another build is writing here" in e and "\n" not in e for e in errors)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "ref0", "ref1", "ref2"]


def test_a_second_build_names_the_holder_of_the_lock(tmp_path: Path) -> None:
    from precomp_host.build.output import Output

    out = tmp_path / "ds"
    np.save(tmp_path / "v.npy", _array(1))
    with Output(out):
        result = subprocess.run(
            [sys.executable, "-m", "precomp_host", "build", str(tmp_path / "v.npy"), str(out),
             "--resolution", "4", "4", "4"],
            capture_output=True, text=True, cwd=REPO, check=False,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"pid {os.getpid()}" in result.stderr
    assert not out.exists(), "the refused build touched nothing"


def test_a_failed_fresh_build_leaves_no_folder(tmp_path: Path) -> None:
    out = tmp_path / "new" / "ds"
    with pytest.raises(BuildError, match="truncated"):
        build_dataset(_SlowVolume(_array(1), fail_at=20), out, OPTIONS)
    assert not out.exists()
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == []


def test_a_source_inside_out_is_refused_before_anything_is_touched(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    build_dataset(volume_from_array(_array(1)), out, OPTIONS)
    source = out / "raw" / "v.npy"
    source.parent.mkdir()
    np.save(source, _array(2))
    (tmp_path / "beside").mkdir()
    before = _tree(tmp_path)
    overwrite = BuildOptions(resolution=(4.0, 4.0, 4.0), chunk_size=(16, 16, 16), overwrite=True)
    for src in (source, source.parent, out / "raw" / "*.npy", out):
        with pytest.raises(BuildError, match="inside OUT"):
            build_dataset(src, out, overwrite)
    assert _tree(tmp_path) == before


def _finished(tmp_path: Path) -> Path:
    out = tmp_path / "ds"
    build_dataset(volume_from_array(_array(1)), out, OPTIONS)
    return out


@pytest.mark.parametrize(
    ("change", "differs"),
    [
        ({"layout": "flat"}, "layout: nested here, flat now"),
        ({"compress": ("gzip",)}, "stored files"),
        ({"keep_identity": True}, "stored files"),
        ({"chunk_size": (8, 8, 8)}, "info"),
    ],
)
def test_resume_of_a_finished_dataset_compares_every_setting(
    tmp_path: Path, change: dict[str, Any], differs: str
) -> None:
    out = _finished(tmp_path)
    before = _tree(out)
    options = BuildOptions(
        **{"resolution": (4.0, 4.0, 4.0), "chunk_size": (16, 16, 16), "resume": True, **change}
    )
    with pytest.raises(BuildError, match=f"other settings \\({differs}"):
        build_dataset(volume_from_array(_array(1)), out, options)
    assert _tree(out) == before, "no second layout or variant beside the first"


def test_resume_of_a_finished_dataset_with_its_settings_is_a_no_op(tmp_path: Path) -> None:
    out = _finished(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    resume = BuildOptions(resolution=(4.0, 4.0, 4.0), chunk_size=(16, 16, 16), resume=True)
    build_dataset(volume_from_array(_array(1)), out, resume)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    assert json.loads((out / "info").read_text())["scales"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "poll",
    [
        pytest.param(False, id="native"),
        pytest.param(True, id="polling"),
    ],
)
def test_live_reload_announces_the_replaced_dataset_once_it_is_complete(
    tmp_path: Path, poll: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from precomp_host.build.output import Output
    from precomp_host.host.watch import DataWatcher

    swapped: list[float] = []
    publish = Output.publish

    def timed_publish(self: Output) -> None:
        swapped.append(time.monotonic())
        publish(self)

    monkeypatch.setattr(Output, "publish", timed_publish)

    out = tmp_path / "ds"
    build_dataset(volume_from_array(_array(1)), out, OPTIONS)
    announced: list[tuple[float, set[str]]] = []
    got_ds = threading.Event()

    def on_change(datasets: set[str]) -> None:
        announced.append((time.monotonic(), datasets))
        if "ds" in datasets:
            got_ds.set()

    overwrite = BuildOptions(resolution=(4.0, 4.0, 4.0), chunk_size=(16, 16, 16), overwrite=True)
    with DataWatcher(tmp_path, on_change, poll=poll, poll_interval=0.1, delay=0.05):
        time.sleep(0.3)
        build_dataset(_SlowVolume(_array(2)), out, overwrite)
        assert got_ds.wait(timeout=10), f"the new dataset was not announced: {announced}"
    early = [names for when, names in announced if "ds" in names and when < swapped[0]]
    assert early == [], "viewers of ds were told to reload before the new dataset was complete"
