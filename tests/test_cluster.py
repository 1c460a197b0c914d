"""The Dask executor (build/cluster.py) on a LocalCluster of worker processes: every task run,
``done`` per finished task, retries, a dead worker's task rescheduled, a failure raised (the
caller's final step never runs); and the build on it, byte-identical to the in-process one."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from precomp_host.build.cluster import DaskExecutor, ExecutorError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@dataclasses.dataclass(frozen=True)
class WriteTask:
    """Writes its own file (as a region task does); picklable for Dask workers."""

    folder: str
    index: int
    #: Fail (raise) the first ``fail_times`` attempts, counted in files beside the output.
    fail_times: int = 0
    #: Kill the worker process running the first attempt.
    kill_worker: bool = False

    def __call__(self) -> int:
        attempts = os.path.join(self.folder, f"{self.index}.attempts")
        with open(attempts, "a") as f:
            f.write("x")
        with open(attempts) as f:
            attempt = len(f.read())
        if self.kill_worker and attempt == 1:
            os._exit(1)  # the worker dies mid-task, as a preempted node would
        if attempt <= self.fail_times:
            raise RuntimeError(f"task {self.index}: attempt {attempt} fails")
        data = f"{self.index}\n".encode() * (self.index + 1)
        with open(os.path.join(self.folder, f"{self.index}.out"), "wb") as f:
            f.write(data)
        return len(data)


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.out"))}


def expected(n: int) -> dict[str, bytes]:
    return {f"{i}.out": f"{i}\n".encode() * (i + 1) for i in range(n)}


def test_bad_cluster_address_is_one_line() -> None:
    pytest.importorskip("distributed")
    with pytest.raises(ExecutorError, match="local:N"):
        DaskExecutor("somewhere")
    with pytest.raises(ExecutorError, match="at least one worker"):
        DaskExecutor("local:0")


@pytest.fixture(scope="module")
def local2() -> Iterator[DaskExecutor]:
    pytest.importorskip("distributed")
    with DaskExecutor("local:2", in_flight=3) as ex:
        yield ex


@pytest.mark.slow
def test_local_cluster_runs_tasks_in_two_processes(tmp_path: Path, local2: DaskExecutor) -> None:
    assert local2.workers == 2
    sizes: list[int] = []
    # One task fails twice and is retried by the scheduler (retries=2); one kills its worker
    # process and is rescheduled on another (the nanny restarts the dead one).
    tasks = [
        WriteTask(str(tmp_path), i, fail_times=2 if i == 3 else 0, kill_worker=i == 5)
        for i in range(12)
    ]
    local2.run(iter(tasks), sizes.append)
    assert outputs(tmp_path) == expected(12)
    assert len(sizes) == 12
    assert (tmp_path / "3.attempts").read_text() == "xxx"
    assert (tmp_path / "5.attempts").read_text() == "xx"  # killed once, then run elsewhere


@pytest.mark.slow
def test_local_cluster_raises_after_its_retries(tmp_path: Path, local2: DaskExecutor) -> None:
    with pytest.raises(RuntimeError, match="attempt 3 fails"):
        local2.run([WriteTask(str(tmp_path), 0, fail_times=5)], lambda n: None)
    assert (tmp_path / "0.attempts").read_text() == "xxx"  # 1 try + 2 retries


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_build_on_a_local_cluster_is_byte_identical(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    import numpy as np

    from precomp_host.build.builder import build_dataset
    from precomp_host.build.sample import sample_labels, sample_labels_options
    from precomp_host.build.sources import volume_from_array
    from precomp_host.cli import main
    from tests.test_build import make_volume

    # The image through the CLI (the README's local recipe), the segmentation through the API.
    np.save(tmp_path / "vol.npy", make_volume("uint8")[..., 0].transpose(2, 1, 0))
    args = ["build", str(tmp_path / "vol.npy"), "--resolution", "4", "4", "6", "--chunk-size",
            "16", "-q"]  # fmt: skip
    assert main([*args[:2], str(tmp_path / "image-threads"), *args[2:]]) == 0
    assert (
        main([*args[:2], str(tmp_path / "image-cluster"), *args[2:], "--cluster", "local:2"]) == 0
    )
    labels, options = volume_from_array(sample_labels()), sample_labels_options(False)
    build_dataset(labels, tmp_path / "labels-threads", options)  # meshes, segment properties
    build_dataset(
        labels, tmp_path / "labels-cluster", dataclasses.replace(options, cluster="local:2")
    )
    for name in ("image", "labels"):
        here, there = tmp_path / f"{name}-threads", tmp_path / f"{name}-cluster"
        assert len(json.loads((here / "info").read_text())["scales"]) > 1
        assert _tree(here) == _tree(there), name


@dataclasses.dataclass
class KillOnce:
    """An array volume whose first read in a process other than ``driver`` kills that
    process (a preempted worker, mid-task); a file in ``marks`` says it happened."""

    array: np.ndarray  # [z, y, x, c]
    marks: str
    driver: int
    shape: tuple[int, int, int] = (0, 0, 0)
    dtype: np.dtype[Any] = dataclasses.field(default_factory=lambda: np.dtype("uint8"))
    num_channels: int = 1

    def __post_init__(self) -> None:
        z, y, x, c = self.array.shape
        self.shape, self.dtype, self.num_channels = (x, y, z), self.array.dtype, c

    def read(self, z0: int, z1: int) -> np.ndarray:
        if os.getpid() != self.driver:
            try:
                os.close(os.open(os.path.join(self.marks, "killed"), os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                os._exit(1)
        return np.ascontiguousarray(self.array[z0:z1])


@pytest.mark.slow
def test_killed_worker_mid_build_still_ends_identical(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    from precomp_host.build.builder import BuildOptions, build_dataset
    from precomp_host.build.sources import volume_from_array
    from tests.test_build import make_volume

    vol = make_volume("uint8")
    zyxc = np.ascontiguousarray(vol.transpose(2, 1, 0, 3))
    # Region tasks of a few chunks: several stages, so later stages read the scratch that
    # tasks in other processes stored.
    options = BuildOptions(resolution=(4, 4, 6), chunk_size=(16, 16, 16), region_bytes=1)
    lines: list[str] = []
    build_dataset(volume_from_array(zyxc, "ZYXC"), tmp_path / "threads", options)
    killer = KillOnce(zyxc, str(tmp_path), os.getpid())
    build_dataset(killer, tmp_path / "cluster", dataclasses.replace(options, cluster="local:2"),
                  plan=lines.append)  # fmt: skip
    assert (tmp_path / "killed").exists()
    assert "for scales 1-" in lines[0], lines  # more than one stage
    assert _tree(tmp_path / "threads") == _tree(tmp_path / "cluster")


def test_cli_bad_cluster_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("distributed")
    import numpy as np

    from precomp_host.cli import main

    np.save(tmp_path / "vol.npy", np.ones((8, 8, 8), np.uint8))
    out = tmp_path / "out"
    code = main(["build", str(tmp_path / "vol.npy"), str(out), "--resolution", "1", "1", "1",
                 "--cluster", "tcp://127.0.0.1:9", "-q"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "cannot reach the scheduler" in err
    assert err.count("\n") == 1
    assert not out.exists()
