"""kfp.local's DockerRunner, executed by buildah where there is no Docker engine.

kfp.local runs each task of a pipeline under ``local.DockerRunner()`` through one method,
``kfp.local.docker_task_handler.DockerTaskHandler.run``: it starts the task's compiled command
(``sh -ec ... python3 -m kfp.dsl.executor_main ...``) in the task's image with the pipeline root
bind-mounted at the same path and the task's environment, streams its log and returns its status,
all through the Docker SDK. :func:`buildah_docker_runner` swaps in that one method for the same
container started by ``buildah run --isolation chroot`` (daemonless, as root). Everything else --
the command, the executor input, reading the outputs back -- stays kfp.local's own, and the
command runs as the image's USER, as it would under Docker or Kubernetes.

kfp.local offers DockerRunner only where ``import docker`` works: the dev extra installs the SDK.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

from kfp.local import docker_task_handler, status

# As docker/build.sh runs it: root's image storage, through sudo for another user.
BUILDAH = ["buildah"] if os.geteuid() == 0 else ["sudo", "--preserve-env=STORAGE_DRIVER", "buildah"]


def buildah_available() -> bool:
    return shutil.which("buildah") is not None


@dataclass(frozen=True)
class Ran:
    """One task's container: what ran where, and how it ended."""

    image: str
    command: list[str]
    returncode: int


_ran: list[Ran] = []


def _run_in_buildah(self: docker_task_handler.DockerTaskHandler) -> status.Status:
    """DockerTaskHandler.run, on buildah: a working container of the image, removed after the task."""
    container = subprocess.run([*BUILDAH, "from", "--pull-never", "--quiet", self.image],
                               capture_output=True, text=True, check=True).stdout.strip()
    try:
        # the mounts Docker would get (the pipeline root; kfp's workspace where one is configured)
        volumes = [f"{host}:{spec['bind']}" for host, spec in self.get_volumes_to_mount().items()]
        command = [*BUILDAH, "run", "--isolation", "chroot", *(f"--volume={v}" for v in volumes),
                   *(f"--env={k}={v}" for k, v in self.env_vars.items()), container, "--", *self.full_command]
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:  # streamed like the Docker handler's log, into kfp.local's indented print
                print(line, end="")
        _ran.append(Ran(self.image, list(self.full_command), proc.returncode))
        return status.Status.SUCCESS if proc.returncode == 0 else status.Status.FAILURE
    finally:
        subprocess.run([*BUILDAH, "rm", container], capture_output=True, check=False)


@contextlib.contextmanager
def buildah_docker_runner() -> Iterator[list[Ran]]:
    """While active, kfp.local's DockerRunner tasks run in buildah containers; yields the list of
    the containers run, filled as they finish."""
    original = docker_task_handler.DockerTaskHandler.run
    docker_task_handler.DockerTaskHandler.run = _run_in_buildah  # type: ignore[method-assign]
    _ran.clear()
    try:
        yield _ran
    finally:
        docker_task_handler.DockerTaskHandler.run = original  # type: ignore[method-assign]
