"""Storm's local mode: a Flux topology in one JVM, from the jars of dev/storm.

`storm local` is not needed: it only runs `org.apache.storm.LocalCluster <main class> <args>`,
which starts nimbus, a supervisor and the workers in its own JVM, runs the main class (here
Flux) with StormSubmitter pointed at that in-process cluster, keeps the cluster up for
`storm.local.sleeptime` seconds after the main class returns, then stops it and exits 0.
StormSubmitter still wants a jar to "upload" (`storm.jar`): flux-core's serves.

Flux's own `--local` and `--sleep` are ignored since Storm 2.0; `-e` substitutes
`${ENV-NAME}` from the environment, one substitution per line of YAML at most.

In local mode a shell bolt that dies takes the whole JVM with it (exit status 1): nothing in it
restarts the bolt. Storm's cluster mode does (`threadcast.stats.storm.cluster`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from threadcast.stats.storm.java import find_jar, java_command


@dataclass(frozen=True)
class LocalStorm:
    """How to start the JVM: jars, heap, where Storm keeps its state, logs and temporary files.

    `zookeeper` ("host:port") keeps Storm's cluster state in that ZooKeeper under `zk_root`, and
    turns tuple timeouts on; without it, LocalCluster starts a ZooKeeper of its own that listens
    on all interfaces (port 2000 or the next free one) and leaves tuple timeouts off, so a tuple
    lost by a dead bolt is never replayed while the JVM lives. Give each JVM a root of its own:
    one that was killed keeps nimbus leadership in its root until its ZooKeeper session expires
    (20 s), and a new one in the same root fails with "Nimbus failed to gain leadership".
    """

    lib_dir: Path
    zookeeper: str | None = None
    zk_root: str = "/storm"
    heap_mb: int = 512
    log_file: Path | None = None
    # LocalCluster's nimbus, supervisor and worker directories (java.io.tmpdir); they are left
    # behind when the JVM is killed, and hold a RocksDB metrics store of about 75 MB.
    tmp_dir: Path | None = None

    def command(self, topology: Path, run_secs: int) -> list[str]:
        """java ... LocalCluster Flux: run `topology` (Flux YAML) for `run_secs`, then exit."""
        props = {
            "storm.jar": str(find_jar(self.lib_dir, "flux-core")),
            "storm.local.sleeptime": str(run_secs),
            "storm.options": f"storm.zookeeper.root={self.zk_root}",
        }
        if self.zookeeper:
            props["storm.local.zookeeper"] = self.zookeeper
        if self.tmp_dir:
            props["java.io.tmpdir"] = str(self.tmp_dir)
        return java_command(
            self.lib_dir,
            "org.apache.storm.LocalCluster",
            ["org.apache.storm.flux.Flux", "--env-filter", "--no-splash", str(topology)],
            heap_mb=self.heap_mb,
            props=props,
            log_file=self.log_file,
        )


class LocalRun:
    """One local-mode JVM running a Flux definition, in a session of its own (a Ctrl-C meant
    for its parent does not reach it); its stdout and stderr go to `output`."""

    def __init__(self, storm: LocalStorm, topology: Path, run_secs: int, env: Mapping[str, str], output: Path) -> None:
        self.storm = storm
        with open(output, "wb") as out:
            self.proc = subprocess.Popen(
                storm.command(topology, run_secs),
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        """The exit status, once the JVM has exited."""
        return self.proc.poll()

    def stop(self, grace: float = 30.0) -> int:
        """SIGTERM (SIGKILL to its process group after `grace` seconds), then drop
        LocalCluster's directories, which a JVM that did not run to its end leaves behind. The
        shell bolts exit when their stdin closes. Returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.storm.tmp_dir is not None:
            shutil.rmtree(self.storm.tmp_dir, ignore_errors=True)
        return self.proc.returncode
