"""E-mail delivery of rendered reports over SMTP, idempotent per (report, quarter, recipient).

Every attempt outcome is recorded in the warehouse table ``report_deliveries`` (one row per
report x quarter x recipient: the latest outcome). A recipient whose row says ``sent`` is
never mailed again for that report and quarter; a failed send is recorded as ``failed``
with the error and retried on the next run.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import smtplib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from jinja2 import Environment, select_autoescape
from sqlalchemy.engine import Engine

from pipeline.reports.render import normalise_language, translator
from pipeline.settings import SmtpSettings

log = logging.getLogger(__name__)

DELIVERIES_TABLE = "report_deliveries"
_metadata = sa.MetaData()
deliveries = sa.Table(
    DELIVERIES_TABLE,
    _metadata,
    sa.Column("report", sa.String(40), primary_key=True),
    sa.Column("quarter", sa.String(8), primary_key=True),
    sa.Column("recipient", sa.String(320), primary_key=True),
    sa.Column("status", sa.String(10), nullable=False),  # sent | failed
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("message_id", sa.String(200)),
    sa.Column("subject", sa.Text),
    sa.Column("attachments", sa.Text),  # file names, " | "-separated
    sa.Column("content_sha256", sa.String(64)),
    sa.Column("error", sa.Text),
    sa.Column("recorded_at", sa.DateTime),  # UTC, naive: when this outcome was recorded
)


class DeliveryError(RuntimeError):
    """Sending failed after all retries; the named recipients were not marked sent."""

    def __init__(self, message: str, attempts: int = 0) -> None:
        super().__init__(message)
        self.attempts = attempts


def _permanent(error: Exception) -> bool:
    """A 5xx reply (to the message or to every recipient): trying again cannot help."""
    if isinstance(error, smtplib.SMTPResponseException):
        return 500 <= error.smtp_code < 600
    if isinstance(error, smtplib.SMTPRecipientsRefused) and error.recipients:
        return all(500 <= code < 600 for code, _ in error.recipients.values())
    return False


@dataclass
class ReportEmail:
    """What to send: the report, its headline figures and the files to attach."""

    report: str
    quarter: str
    title: str
    headline: list[dict[str, str]]
    attachments: list[Path]
    language: str = "zh_CN"
    extra_body: dict[str, Any] = field(default_factory=dict)


_BODY = Environment(autoescape=select_autoescape(default=True)).from_string(
    """<!DOCTYPE html><html><body style="font-family:sans-serif;color:#1d2731">
<p>{{ t("mail.greeting") }}</p>
<p>{{ t("mail.attached", title=title, quarter=quarter) }}</p>
<table style="border-collapse:collapse">
{% for h in headline %}<tr><td style="padding:4px 12px 4px 0">{{ h.label }}</td>
<td style="padding:4px 12px;font-weight:bold;text-align:right">{{ h.value }}</td>
<td style="padding:4px 0;color:#5b6770">{{ h.change }}</td></tr>{% endfor %}
</table>
<p style="color:#a93226;font-size:small">{{ t("mail.footer") }}</p>
</body></html>"""
)


def build_message(email: ReportEmail, sender: str, recipient: str) -> EmailMessage:
    """One MIME message: HTML body with the headline figures, plain-text fallback, files.

    EmailMessage encodes the Chinese subject (RFC 2047) and attachment names (RFC 2231).
    """
    t = translator(normalise_language(email.language))
    message = EmailMessage()
    message["Subject"] = f"{email.title} {email.quarter}"
    message["From"] = sender
    message["To"] = recipient
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[-1] or "localhost")
    text = "\n".join(
        [t("mail.attached", title=email.title, quarter=email.quarter)]
        + [f"- {h['label']}: {h['value']} {h['change']}".rstrip() for h in email.headline]
        + ["", t("mail.footer")]
    )
    # base64 keeps the message 7-bit clean for relays without 8BITMIME.
    message.set_content(text, cte="base64")
    message.add_alternative(
        _BODY.render(t=t, title=email.title, quarter=email.quarter, headline=email.headline),
        subtype="html",
    )
    for path in email.attachments:
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        maintype, subtype = ctype.split("/", 1)
        # Text files (the CSV worklist) are UTF-8: say so, or clients guess ASCII.
        params = {"charset": "utf-8"} if maintype == "text" else {}
        message.add_attachment(
            path.read_bytes(), maintype=maintype, subtype=subtype, filename=path.name, params=params
        )
    return message


def _connect(smtp: SmtpSettings) -> smtplib.SMTP:
    cls = smtplib.SMTP_SSL if smtp.use_ssl else smtplib.SMTP
    client = cls(smtp.host, smtp.port, timeout=smtp.timeout_seconds)
    if smtp.starttls and not smtp.use_ssl:
        client.starttls()
    if smtp.username:
        client.login(smtp.username, smtp.password or "")
    return client


def _send_with_retry(
    smtp: SmtpSettings, message: EmailMessage, sleep: Callable[[float], None]
) -> int:
    """Send one message; returns the attempts used, raises DeliveryError after the last."""
    attempts = max(1, smtp.retries)
    for attempt in range(1, attempts + 1):
        try:
            with _connect(smtp) as client:
                refused = client.send_message(message)
            if refused:
                raise smtplib.SMTPRecipientsRefused(refused)
            return attempt
        except (smtplib.SMTPException, OSError) as error:
            if _permanent(error) or attempt == attempts:
                raise DeliveryError(
                    f"sending {message['Subject']!s} to {message['To']} failed after "
                    f"{attempt} attempt(s) via {smtp.host}:{smtp.port}: {error!r}",
                    attempts=attempt,
                ) from error
            delay = smtp.retry_backoff_seconds * 2 ** (attempt - 1)
            log.warning("SMTP attempt %d failed (%r); retrying in %.1fs", attempt, error, delay)
            sleep(delay)
    raise AssertionError("unreachable")


def sent_recipients(engine: Engine, report: str, quarter: str) -> set[str]:
    """Recipients already marked sent for ``report`` and ``quarter``."""
    _metadata.create_all(engine, tables=[deliveries])
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(deliveries.c.recipient).where(
                deliveries.c.report == report,
                deliveries.c.quarter == quarter,
                deliveries.c.status == "sent",
            )
        )
        return {r[0] for r in rows}


def _record(engine: Engine, row: dict[str, Any]) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.delete(deliveries).where(
                deliveries.c.report == row["report"],
                deliveries.c.quarter == row["quarter"],
                deliveries.c.recipient == row["recipient"],
            )
        )
        conn.execute(sa.insert(deliveries).values(**row))


def send_report(
    engine: Engine,
    smtp: SmtpSettings,
    email: ReportEmail,
    recipients: Sequence[str],
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, list[str]]:
    """Send ``email`` to each recipient not yet marked sent; record every outcome.

    Returns ``{"sent": [...], "skipped": [...], "failed": [...]}``; raises DeliveryError
    (after trying every recipient) when any send failed.
    """
    already = sent_recipients(engine, email.report, email.quarter)
    digest = hashlib.sha256()
    for path in email.attachments:
        digest.update(path.read_bytes())
    outcome: dict[str, list[str]] = {"sent": [], "skipped": [], "failed": []}
    errors = []
    for recipient in dict.fromkeys(recipients):
        if recipient in already:
            log.info("%s %s already sent to %s: skipped", email.report, email.quarter, recipient)
            outcome["skipped"].append(recipient)
            continue
        message = build_message(email, smtp.sender, recipient)
        row = {
            "report": email.report,
            "quarter": email.quarter,
            "recipient": recipient,
            "message_id": str(message["Message-ID"]),
            "subject": str(message["Subject"]),
            "attachments": " | ".join(p.name for p in email.attachments),
            "content_sha256": digest.hexdigest(),
        }
        try:
            attempts = _send_with_retry(smtp, message, sleep)
        except DeliveryError as error:
            _record(
                engine,
                {
                    **row,
                    "status": "failed",
                    "attempts": error.attempts or max(1, smtp.retries),
                    "error": str(error),
                    "recorded_at": _now(),
                },
            )
            outcome["failed"].append(recipient)
            errors.append(str(error))
            log.error("%s", error)
            continue
        _record(
            engine,
            {**row, "status": "sent", "attempts": attempts, "error": None, "recorded_at": _now()},
        )
        outcome["sent"].append(recipient)
        log.info("sent %s %s to %s", email.report, email.quarter, recipient)
    if errors:
        raise DeliveryError("; ".join(errors))
    return outcome


def _now() -> datetime:
    # Audit timestamp of the delivery itself (an edge effect), not an input to any logic.
    return datetime.now(UTC).replace(tzinfo=None)
