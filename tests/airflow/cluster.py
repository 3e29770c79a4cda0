"""A real Airflow 3 for integration tests: metadata on the local PostgreSQL, real processes.

``AirflowCluster`` creates a dedicated metadata database, runs ``airflow db migrate``,
starts the api-server, scheduler and dag-processor (and a Celery worker under the
CeleryExecutor) as subprocesses in their own process groups, and talks to them through
the REST API. ``stop()`` kills every process group and drops the database.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import psycopg

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
TERMINAL_RUN_STATES = {"success", "failed"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _admin_execute(sql: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(sql)


class AirflowCluster:
    """One Airflow deployment (AIRFLOW_HOME under ``home``) running the project's DAGs."""

    def __init__(self, home: Path, executor: str, extra_env: dict[str, str]) -> None:
        self.home = home
        self.executor = executor
        token = secrets.token_hex(4)
        self.database = f"airflow_it_{token}"
        self.queue = f"crm_it_{token}"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.processes: dict[str, subprocess.Popen] = {}
        metadata_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.database}"
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": executor,
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
            # psycopg 3 serves the async engine too (Airflow would default to asyncpg).
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": metadata_url.replace(
                "+psycopg:", "+psycopg_async:"
            ),
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            # Only runs the tests create: no scheduled runs of the real schedules.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": self.queue,
            "AIRFLOW__CELERY__BROKER_URL": "redis://127.0.0.1:6379/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg://postgres@127.0.0.1:5432/{self.database}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
            "PYTHONPATH": str(REPO),
            **extra_env,
        }
        self._client: httpx.Client | None = None

    # -- life cycle -------------------------------------------------------------------------

    def start(self, timeout: float = 400) -> None:
        _admin_execute(f'CREATE DATABASE "{self.database}"')
        self.home.mkdir(parents=True, exist_ok=True)
        self.airflow("db", "migrate", timeout=timeout)
        commands = {
            "api-server": ["api-server", "--port", str(self.port), "--workers", "1"],
            "scheduler": ["scheduler"],
            "dag-processor": ["dag-processor"],
        }
        if self.executor == "CeleryExecutor":
            commands["celery-worker"] = [
                "celery",
                "worker",
                "--queues",
                self.queue,
                "--concurrency",
                "2",
                "--without-mingle",
                "--without-gossip",
            ]
        for name, args in commands.items():
            log = (self.home / f"{name}.log").open("wb")
            self.processes[name] = subprocess.Popen(
                [AIRFLOW, *args],
                env=self.env,
                cwd=self.home,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() kills the children too
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                if all(
                    self.get(f"/api/v2/dags/{d}", check=False).status_code == 200
                    for d in self.dag_ids
                ):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(2)
        else:
            raise TimeoutError(f"Airflow did not serve both DAGs within {timeout}s\n{self.logs()}")
        for dag_id in self.dag_ids:
            self.patch(f"/api/v2/dags/{dag_id}", {"is_paused": False})

    dag_ids = ("crm_ingest", "crm_quarterly_reports")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for process in self.processes.values():
            # Stragglers: task processes, executor workers.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if self._client is not None:
            self._client.close()
        _admin_execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')

    def _check_alive(self) -> None:
        dead = {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}
        if dead:
            raise RuntimeError(f"Airflow processes exited: {dead}\n{self.logs()}")

    def logs(self, tail: int = 3000) -> str:
        return "\n".join(
            f"--- {path.name} ---\n{path.read_text(errors='replace')[-tail:]}"
            for path in sorted(self.home.glob("*.log"))
        )

    def airflow(self, *args: str, timeout: float = 300) -> str:
        """Run an ``airflow`` CLI command against this deployment; its output."""
        result = subprocess.run(
            [AIRFLOW, *args],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"airflow {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
            )
        return result.stdout

    # -- REST API ---------------------------------------------------------------------------

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            token = httpx.get(f"{self.base_url}/auth/token", timeout=30).json()["access_token"]
            self._client = httpx.Client(
                base_url=self.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60
            )
        return self._client

    def get(self, path: str, check: bool = True, **params: Any) -> httpx.Response:
        response = self.client.get(path, params=params)
        if check:
            response.raise_for_status()
        return response

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.client.post(path, json=body)
        if response.is_error:
            raise RuntimeError(f"POST {path}: {response.status_code} {response.text}")
        return response.json()

    def patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.client.patch(path, json=body)
        if response.is_error:
            raise RuntimeError(f"PATCH {path}: {response.status_code} {response.text}")
        return response.json()

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Trigger a manual run; its run id."""
        run = self.post(
            f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}}
        )
        return run["dag_run_id"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}").json()["state"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 900) -> str:
        """Wait until the run finishes; its final state (``success`` or ``failed``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            state = self.run_state(dag_id, run_id)
            if state in TERMINAL_RUN_STATES:
                return state
            time.sleep(2)
        raise TimeoutError(
            f"{dag_id} run {run_id} still {state} after {timeout}s: {self.task_states(dag_id, run_id)}"
            f"\n{self.logs()}"
        )

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        instances = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances").json()
        return {ti["task_id"]: ti["state"] for ti in instances["task_instances"]}

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """The task's log as the API serves it (the same text the UI shows)."""
        response = self.get(
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            full_content=True,
        )
        content = response.json()["content"]
        if not isinstance(content, list):
            return str(content)
        lines = []
        for line in content:
            if not isinstance(line, dict):
                lines.append(str(line))
                continue
            lines.append(str(line.get("event", "")))
            # Structured logs keep the exception apart from the message.
            for error in line.get("error_detail") or []:
                lines.append(f"{error.get('exc_type')}: {error.get('exc_value')}")
        return "\n".join(lines)

    def explain(self, dag_id: str, run_id: str) -> str:
        """Task states plus the log tail of every failed task: the message of a failed assert."""
        states = self.task_states(dag_id, run_id)
        parts = [f"{dag_id} {run_id}: {states}"]
        for task_id, state in states.items():
            if state == "failed":
                parts.append(f"--- {task_id} ---\n{self.task_log(dag_id, run_id, task_id)[-3000:]}")
        return "\n".join(parts)

    def clear_run(self, dag_id: str, run_id: str) -> None:
        """Clear every task of a finished run so that the scheduler runs it again."""
        self.post(
            f"/api/v2/dags/{dag_id}/clearTaskInstances",
            {"dry_run": False, "dag_run_id": run_id, "only_failed": False, "reset_dag_runs": True},
        )

    def wait_for_runs(
        self, dag_id: str, run_type: str, count: int, timeout: float = 1200
    ) -> list[dict[str, Any]]:
        """Wait until ``count`` runs of ``run_type`` exist and all have finished; the runs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            runs = self.runs(dag_id, run_types={run_type})
            if len(runs) >= count and all(r["state"] in TERMINAL_RUN_STATES for r in runs):
                return runs
            time.sleep(2)
        raise TimeoutError(f"{dag_id}: {run_type} runs not finished after {timeout}s: {runs}")

    def runs(self, dag_id: str, run_types: Iterable[str] | None = None) -> list[dict[str, Any]]:
        runs = self.get(f"/api/v2/dags/{dag_id}/dagRuns", order_by="logical_date").json()
        wanted = set(run_types) if run_types else None
        return [r for r in runs["dag_runs"] if wanted is None or r["run_type"] in wanted]
