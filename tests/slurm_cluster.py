"""A real single-node Slurm cluster for the tests: munged, slurmctld and slurmd from Debian's ``munge``
and ``slurm-wlm`` packages, on this machine's loopback, with every file in one directory.

``SlurmCluster.start`` returns the environment (``SLURM_CONF``) that points Slurm's commands at it, or
raises ``ClusterUnavailable`` saying why it cannot start here (packages missing, a daemon refusing).
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
COMMANDS = ("sbatch", "squeue", "scancel", "scontrol", "sinfo")


class ClusterUnavailable(Exception):
    """Why the test cluster cannot run on this machine."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _binary(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/sbin") / name) if p.exists()), None
    )


class SlurmCluster:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.processes: list[subprocess.Popen] = []
        self.environment: dict[str, str] = {}

    def start(self, timeout_s: float = 60.0) -> dict[str, str]:
        missing = [name for name in (*DAEMONS, *COMMANDS) if _binary(name) is None]
        if missing:
            raise ClusterUnavailable(
                f"no {', '.join(missing)} here: the Slurm tests need Debian's slurm-wlm and munge "
                "(apt-get install slurm-wlm munge)"
            )
        d = self.directory
        for sub in ("state", "spool"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        key = d / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        munge_socket = d / "munge.socket"
        self._daemon(
            [
                _binary("munged"),
                "--foreground",
                "--force",
                f"--key-file={key}",
                f"--socket={munge_socket}",
                f"--pid-file={d / 'munged.pid'}",
                f"--log-file={d / 'munged.log'}",
                f"--seed-file={d / 'munged.seed'}",
            ],  # fmt: skip
            "munged",
        )
        self._wait(lambda: munge_socket.exists(), timeout_s, "munged did not create its socket", "munged.log")
        user, node = getpass.getuser(), socket.gethostname().split(".")[0]
        cpus = os.cpu_count() or 1
        memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 // 2
        conf = d / "slurm.conf"
        conf.write_text(
            "\n".join(
                [
                    "ClusterName=modelcollapsetest",
                    f"SlurmctldHost={node}(127.0.0.1)",
                    f"SlurmctldPort={_free_port()}",
                    f"SlurmdPort={_free_port()}",
                    f"SlurmUser={user}",
                    f"SlurmdUser={user}",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    # cred_expire: how long a requeued job waits before it may start again (default 120 s)
                    f"AuthInfo=socket={munge_socket},cred_expire=10",
                    f"StateSaveLocation={d / 'state'}",
                    f"SlurmdSpoolDir={d / 'spool'}",
                    f"SlurmctldPidFile={d / 'slurmctld.pid'}",
                    f"SlurmdPidFile={d / 'slurmd.pid'}",
                    f"SlurmctldLogFile={d / 'slurmctld.log'}",
                    f"SlurmdLogFile={d / 'slurmd.log'}",
                    # no cgroups on a test machine: track processes by their parent, bind nothing
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_CPU",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    "MpiDefault=none",
                    "ReturnToService=2",
                    "SchedulerParameters=sched_interval=1",
                    f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
                    f"PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP",
                ]
            )
            + "\n"
        )
        self.environment = {"SLURM_CONF": str(conf)}
        self._daemon([_binary("slurmctld"), "-D", "-i", "-f", str(conf)], "slurmctld")
        self._daemon([_binary("slurmd"), "-D", "-N", node, "-f", str(conf)], "slurmd")
        self._wait(self._node_ready, timeout_s, "the node did not come up", "slurmd.log")
        return self.environment

    def _daemon(self, command: list, name: str) -> None:
        output = open(self.directory / f"{name}.out", "w")  # noqa: SIM115 (the daemon writes it until stop())
        self.processes.append(
            subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env={**os.environ, **self.environment})
        )

    def _node_ready(self) -> bool:
        state = self.run("sinfo", "--noheader", "--format=%T").stdout.strip()
        return state in ("idle", "mixed", "allocated")

    def _wait(self, ready, timeout_s: float, problem: str, log: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ready():
                return
            dead = [p for p in self.processes if p.poll() is not None]
            if dead:
                break
            time.sleep(0.2)
        tail = self.log_tail(log)
        self.stop()
        raise ClusterUnavailable(f"{problem}: {tail}")

    def log_tail(self, name: str, lines: int = 3) -> str:
        texts = []
        for path in (self.directory / name, self.directory / name.replace(".log", ".out")):
            if path.exists():
                texts += [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        return " | ".join(texts[-lines:]) or "(no log)"

    def run(self, *command: str, check: bool = False) -> subprocess.CompletedProcess:
        return subprocess.run(
            list(command), capture_output=True, text=True, env={**os.environ, **self.environment}, check=check
        )

    def stop(self) -> None:
        if self.environment:
            self.run("scancel", f"--user={getpass.getuser()}")
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
