"""Failure alerts to the data engineers: which DAG, task and quarter failed, and why."""

from __future__ import annotations

import logging
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from pipeline.delivery import _send_with_retry
from pipeline.settings import Settings

log = logging.getLogger(__name__)


def failure_message(
    settings: Settings, dag_id: str, task_id: str, quarter: str, run_id: str, error: str
) -> EmailMessage:
    """The alert mail, one per failed task try; carries no customer data, only the error."""
    message = EmailMessage()
    message["Subject"] = f"[crm-pipeline] FAILED {dag_id}.{task_id} ({quarter})"
    message["From"] = settings.smtp.sender
    message["To"] = ", ".join(settings.reports.alert_recipients)
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(
        domain=settings.smtp.sender.rsplit("@", 1)[-1] or "localhost"
    )
    message.set_content(
        "\n".join(
            [
                f"DAG:     {dag_id}",
                f"Task:    {task_id}",
                f"Quarter: {quarter}",
                f"Run:     {run_id}",
                "",
                "Error:",
                error,
                "",
                "The task's own tables were left as they were before the run (each stage writes in one transaction).",
            ]
        )
    )
    return message


def send_failure_alert(
    settings: Settings, dag_id: str, task_id: str, quarter: str, run_id: str, error: str
) -> None:
    """Email the alert; an alert that cannot be sent is logged, never raised over the original failure."""
    if not settings.reports.alert_recipients:
        return
    message = failure_message(settings, dag_id, task_id, quarter, run_id, error)
    try:
        _send_with_retry(settings.smtp, message, time.sleep)
    except Exception:
        log.exception("could not send the failure alert for %s.%s", dag_id, task_id)
