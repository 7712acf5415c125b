"""The java command line of threadcast.stats.storm.local (run for real in tests/e2e/test_storm_local.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from threadcast.stats.storm.local import LocalStorm


@pytest.fixture
def lib(tmp_path: Path) -> Path:
    lib = tmp_path / "lib"
    lib.mkdir()
    for jar in ("storm-client-2.8.3.jar", "flux-core-2.8.3.jar", "flux-wrappers-2.8.3.jar"):
        (lib / jar).touch()
    return lib


def test_command_runs_flux_inside_local_cluster_with_the_given_zookeeper(lib: Path) -> None:
    storm = LocalStorm(lib_dir=lib, zookeeper="127.0.0.1:12181", zk_root="/t/run-1", log_file=Path("/l/storm.log"))
    command = storm.command(Path("/topo.yaml"), run_secs=60)
    assert command[0] == "java" and "-Xmx512m" in command
    assert command[-7:] == [
        "-cp",
        f"{lib}/*",
        "org.apache.storm.LocalCluster",
        "org.apache.storm.flux.Flux",
        "--env-filter",
        "--no-splash",
        "/topo.yaml",
    ]
    assert {
        f"-Dstorm.jar={lib}/flux-core-2.8.3.jar",
        "-Dstorm.local.sleeptime=60",
        "-Dstorm.options=storm.zookeeper.root=/t/run-1",
        "-Dstorm.local.zookeeper=127.0.0.1:12181",
        "-Dthreadcast.storm.log.file=/l/storm.log",
    } <= set(command)


def test_without_zookeeper_local_cluster_starts_its_own(lib: Path) -> None:
    command = LocalStorm(lib_dir=lib).command(Path("/topo.yaml"), run_secs=5)
    assert not [arg for arg in command if arg.startswith("-Dstorm.local.zookeeper")]


def test_missing_jars_say_how_to_install_them(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="dev/storm/service install"):
        LocalStorm(lib_dir=tmp_path).command(Path("/topo.yaml"), run_secs=5)
