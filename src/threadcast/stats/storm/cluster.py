"""A Storm cluster, from the outside: submit a Flux topology to its nimbus, kill a topology.

Submitting runs Flux's remote mode (`storm jar flux-core.jar org.apache.storm.flux.Flux
--remote`, without the `storm` script): StormSubmitter uploads flux-core's jar as the topology
jar, so the workers' classpath must hold the Kafka spout and Flux's shell bolt wrappers
(storm-kafka-client, kafka-clients, flux-wrappers: the dev cluster's workers have every jar of
dev/storm). Killing runs storm-core's `KillTopology`, what `storm kill` runs.

On the cluster, a shell bolt that dies takes its worker with it (`System.exit`), and the
supervisor starts the worker again, bolts included: the spout resumes from its group's
committed offsets.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from threadcast.stats.storm.java import find_jar, java_command

DEFAULT_NIMBUS_PORT = 6627
CLIENT_HEAP_MB = 256
TIMEOUT = 120.0
"""Seconds a submission or a kill may take."""


class StormCommandFailed(Exception):
    """A Storm client program exited with an error; the message ends with what it printed."""


@dataclass(frozen=True)
class StormCluster:
    lib_dir: Path
    nimbus_host: str
    nimbus_port: int = DEFAULT_NIMBUS_PORT

    @property
    def nimbus(self) -> str:
        return f"{self.nimbus_host}:{self.nimbus_port}"

    def submit(self, definition: str, env: Mapping[str, str]) -> str:
        """Submit a Flux definition (YAML text); `env` fills in its `${ENV-...}` placeholders.
        Returns what Flux printed."""
        with tempfile.TemporaryDirectory(prefix="threadcast-storm-") as folder:
            topology = Path(folder) / "topology.yaml"
            topology.write_text(definition)
            props = {"storm.jar": str(find_jar(self.lib_dir, "flux-core"))}
            args = ["--remote", "--env-filter", "--no-splash", str(topology)]
            return self._run("org.apache.storm.flux.Flux", args, Path(folder), props, env)

    def kill(self, name: str, wait: int = 0) -> str:
        """Kill a topology: its spouts are deactivated for `wait` seconds, then its workers
        stop."""
        find_jar(self.lib_dir, "storm-core")
        with tempfile.TemporaryDirectory(prefix="threadcast-storm-") as folder:
            return self._run("org.apache.storm.command.KillTopology", [name, "-w", str(wait)], Path(folder), {}, {})

    def _run(self, main: str, args: Sequence[str], folder: Path, props: Mapping[str, str], env: Mapping[str, str]) -> str:
        conf = folder / "storm.yaml"
        conf.write_text(yaml.safe_dump({"nimbus.seeds": [self.nimbus_host], "nimbus.thrift.port": self.nimbus_port}))
        log_file = folder / "storm.log"
        command = java_command(
            self.lib_dir,
            main,
            args,
            heap_mb=CLIENT_HEAP_MB,
            props={"storm.conf.file": str(conf), **props},
            log_file=log_file,
        )
        done = subprocess.run(
            command, env={**os.environ, **env}, capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
        output = done.stdout + done.stderr
        if done.returncode != 0:
            logged = log_file.read_text(errors="replace") if log_file.exists() else ""
            raise StormCommandFailed(f"{main} exited with status {done.returncode}:\n{_tail(output + logged)}")
        return output


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
