"""A real Pushgateway and a real Prometheus scraping it, on 127.0.0.1, for the metrics tests.

If ``XDC_TEST_PUSHGATEWAY`` and ``XDC_TEST_PROMETHEUS`` are set (.ci/run starts both once and
stops them on exit) they are used; otherwise the ``monitoring`` fixture starts its own from the
Debian packages ``prometheus-pushgateway`` and ``prometheus`` and stops them after the session.
Prometheus scrapes the Pushgateway every second with ``honor_labels`` (the run_id and task of
the grouping key stay as pushed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from s3_server import free_port

SCRAPE_CONFIG = """\
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: pushgateway
    honor_labels: true
    static_configs:
      - targets: ["{pushgateway}"]
"""


@dataclass
class Monitoring:
    pushgateway: str  # host:port
    prometheus: str  # host:port

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector of ``promql`` from Prometheus's HTTP API."""
        url = f"http://{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.load(r)["data"]["result"]

    def wait_for(self, promql: str, timeout_s: float = 30) -> list[dict[str, Any]]:
        """Query until the result is not empty (a scrape happens every second)."""
        deadline = time.monotonic() + timeout_s
        while not (result := self.query(promql)) and time.monotonic() < deadline:
            time.sleep(0.5)
        return result


def _wait_listening(address: str, what: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited ({process.returncode}): {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://{address}/-/ready", timeout=1)
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not get ready on {address} within 30 s: {log.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def monitoring() -> Iterator[Monitoring]:
    if os.environ.get("XDC_TEST_PUSHGATEWAY") and os.environ.get("XDC_TEST_PROMETHEUS"):
        yield Monitoring(os.environ["XDC_TEST_PUSHGATEWAY"], os.environ["XDC_TEST_PROMETHEUS"])
        return
    binaries = {name: shutil.which(name) for name in ("prometheus-pushgateway", "prometheus")}
    if not all(binaries.values()):
        pytest.fail("the metrics tests need the Debian packages prometheus-pushgateway and prometheus "
                    "(.ci/run installs them): apt-get install prometheus-pushgateway prometheus")
    with tempfile.TemporaryDirectory(prefix="xdc-prom-") as tmp:
        root = Path(tmp)
        gateway, prom = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        (root / "prometheus.yml").write_text(SCRAPE_CONFIG.format(pushgateway=gateway))
        started = []
        try:
            for what, cmd in (
                # Debian's build persists to /var/lib/prometheus by default: in memory only, so each
                # session starts empty and nothing is left behind
                ("pushgateway", [binaries["prometheus-pushgateway"], f"--web.listen-address={gateway}",
                                 "--persistence.file="]),
                ("prometheus", [binaries["prometheus"], f"--config.file={root / 'prometheus.yml'}",
                                f"--storage.tsdb.path={root / 'data'}", f"--web.listen-address={prom}"]),
            ):
                log = root / f"{what}.log"
                process = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
                started.append(process)
                _wait_listening(gateway if what == "pushgateway" else prom, what, process, log)
            yield Monitoring(gateway, prom)
        finally:
            for process in started:
                process.terminate()
                process.wait(timeout=10)
