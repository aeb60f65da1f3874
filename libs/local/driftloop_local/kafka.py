"""A real single-node Apache Kafka broker (KRaft, broker+controller) for local runs and tests.

No Docker and no Apache download site: the broker jars and their runtime dependencies
come from Maven Central through `mvn dependency:copy-dependencies` into a cache folder
outside the repository (`~/.cache/driftloop/kafka/<version>`), reused when present.
The broker listens on 127.0.0.1 only, logs to a file and is stopped by its own pid.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import shutil
import socket
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from driftloop_common.contracts.errors import ConfigError
from driftloop_common.runtime.kafka import cluster_answers
from driftloop_common.runtime.settings import KafkaSettings, cache_root, state_root
from driftloop_local.processes import LocalServer, free_port, pid_alive

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.3.1"
SCALA_VERSION = "2.13"
LOG4J_VERSION = "2.24.3"
SLF4J_VERSION = "1.7.36"


_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.driftloop</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{kafka}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{scala}</artifactId>
      <version>{kafka}</version>
    </dependency>
    <!-- Kafka's published POMs bring no SLF4J binding: route it to log4j2. -->
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-api</artifactId>
      <version>{slf4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.out.ref = out
logger.kafka.name = kafka
logger.kafka.level = {level}
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def fetch_jars(version: str = KAFKA_VERSION, *, quiet: bool = True) -> Path:
    """Download the broker's jars with Maven once; return the folder that holds them."""
    root = cache_root() / "kafka" / version
    libs = root / "libs"
    marker = root / ".complete"
    if marker.exists() and any(libs.glob(f"kafka_{SCALA_VERSION}-*.jar")):
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ConfigError("Maven (mvn) is needed to fetch the Kafka jars from Maven Central")
    if shutil.which("java") is None:
        raise ConfigError("Java 17+ (java) is needed to run the Kafka broker")
    root.mkdir(parents=True, exist_ok=True)
    (root / "pom.xml").write_text(
        _POM.format(kafka=version, scala=SCALA_VERSION, log4j=LOG4J_VERSION, slf4j=SLF4J_VERSION)
    )
    staging = root / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [
        mvn,
        "-B",
        *(["-q"] if quiet else []),
        "-f",
        str(root / "pom.xml"),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}",
        "-DincludeScope=runtime",
    ]
    log.info("fetching Apache Kafka %s jars from Maven Central into %s", version, libs)
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-4000:]
        raise ConfigError(f"mvn could not fetch Kafka {version}:\n{tail}")
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    marker.touch()
    return libs


def _is_our_broker(pid: int, data_dir: Path) -> bool:
    """Guard against a recycled pid: the process must be kafka.Kafka on exactly our config."""
    try:
        cmdline = [a for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return pid_alive(pid)
    config = str(data_dir / "server.properties").encode()
    return b"kafka.Kafka" in cmdline and cmdline[-1:] == [config]


def _accepts_connections(bootstrap: str) -> bool:
    host, _, port = bootstrap.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return True
    except OSError:
        return False


def broker_answers(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """One admin round trip (metadata / DescribeCluster) to `bootstrap`."""
    if not _accepts_connections(bootstrap):  # spares aiokafka's error log while it boots
        return False
    return asyncio.run(cluster_answers(KafkaSettings(bootstrap_servers=bootstrap), timeout_s))


@dataclass
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap: str | None
    data_dir: Path
    log_file: Path

    def describe(self) -> str:
        if self.running:
            return f"running (pid {self.pid}) on {self.bootstrap}; data {self.data_dir}"
        return f"stopped; data {self.data_dir}"


class LocalKafka(LocalServer):
    """One broker instance, identified by its data folder.

    Layout of `data_dir`: `server.properties`, `log4j2.properties`, `kafka.pid`,
    `kafka.port`, `logs/` (the commit log) and `broker.log` (what the JVM printed).
    """

    label, stem, log_name = "Kafka", "kafka", "broker.log"

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        port: int | None = None,
        version: str = KAFKA_VERSION,
        heap: str = "768m",
        log_level: str = "WARN",
    ) -> None:
        super().__init__((data_dir or state_root() / "kafka").resolve(), port=port)
        self.version = version
        self.heap = heap
        self.log_level = log_level

    # ------------------------------------------------------------ state
    @property
    def bootstrap(self) -> str | None:
        port = self.port
        return f"127.0.0.1:{port}" if port else None

    def _owns(self, pid: int) -> bool:
        return _is_our_broker(pid, self.data_dir)

    def status(self) -> BrokerStatus:
        pid = self.pid()
        running = pid is not None and self.bootstrap is not None
        return BrokerStatus(
            running, pid, self.bootstrap if running else None, self.data_dir, self.log_file
        )

    # ------------------------------------------------------------ lifecycle
    def start(self, *, timeout_s: float = 90.0) -> str:
        """Start the broker (formatting storage on first use) and wait until it answers.

        Returns the bootstrap address. Starting a broker that already runs is a no-op.
        """
        if (pid := self.pid()) is not None and self.bootstrap:
            log.info("Kafka already running (pid %s) on %s", pid, self.bootstrap)
            return self.bootstrap
        libs = fetch_jars(self.version)
        java = shutil.which("java")
        if java is None:
            raise ConfigError("Java 17+ (java) is needed to run the Kafka broker")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        port = self._choose_port()
        controller_port = free_port()
        while controller_port == port:
            controller_port = free_port()
        config = self._write_config(port, controller_port)
        classpath = f"{libs}/*"
        log4j = f"-Dlog4j2.configurationFile={(self.data_dir / 'log4j2.properties').resolve()}"
        if not (self.data_dir / "logs" / "meta.properties").exists():
            self._format(java, classpath, log4j, config)
        cmd = [
            java,
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            log4j,
            f"-Dkafka.logs.dir={self.data_dir}",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(config),
        ]
        bootstrap = f"127.0.0.1:{port}"
        pid = self._spawn_and_wait(
            cmd, port, lambda: broker_answers(bootstrap, timeout_s=5.0), timeout_s=timeout_s
        )
        log.info("Kafka %s up (pid %s) on %s", self.version, pid, bootstrap)
        return bootstrap

    def wipe(self) -> None:
        """Stop the broker and delete its data folder (topics, offsets, logs).

        Refuses a folder that does not look like a broker's: `--data-dir .` must not
        delete a project."""
        self.stop()
        if not self.data_dir.exists():
            return
        if not (self.data_dir / "server.properties").exists():
            raise ConfigError(f"{self.data_dir} is not a driftloop Kafka folder; not deleting it")
        shutil.rmtree(self.data_dir, ignore_errors=True)

    # ------------------------------------------------------------ internals
    def _write_config(self, port: int, controller_port: int) -> Path:
        (self.data_dir / "log4j2.properties").write_text(_LOG4J2.format(level=self.log_level))
        config = self.data_dir / "server.properties"
        config.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{port},"
                    f"CONTROLLER://127.0.0.1:{controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    f"log.dirs={self.data_dir / 'logs'}",
                    "num.partitions=3",
                    "auto.create.topics.enable=true",
                    # One node: every internal topic must have a replication factor of 1.
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=10",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "log.retention.hours=168",
                    "",
                ]
            )
        )
        return config

    def _format(self, java: str, classpath: str, log4j: str, config: Path) -> None:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        cmd = [
            java,
            log4j,
            "-cp",
            classpath,
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            f"--cluster-id={cluster_id}",
            "--config",
            str(config),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ConfigError(
                f"formatting KRaft storage failed:\n{(result.stdout + result.stderr)[-4000:]}"
            )
