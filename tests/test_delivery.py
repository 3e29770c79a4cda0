"""Send reports through a real SMTP server on loopback (aiosmtpd) and read what arrived."""

from __future__ import annotations

import email
import email.policy
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from pipeline.delivery import DeliveryError, ReportEmail, send_report, sent_recipients
from pipeline.settings import SmtpSettings
from pipeline.warehouse import create_engine, read_table


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Inbox:
    """aiosmtpd handler that keeps every message; ``reply`` makes DATA fail on purpose."""

    def __init__(self, reply: str | None = None) -> None:
        self.messages: list[tuple[list[str], email.message.EmailMessage]] = []
        self.reply = reply
        self.data_calls = 0
        self.raw: list[bytes] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.data_calls += 1
        if self.reply:
            return self.reply
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((list(envelope.rcpt_tos), parsed))
        self.raw.append(envelope.content)
        return "250 OK"


@pytest.fixture
def server() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
def engine(tmp_path: Path):
    return create_engine(f"sqlite:///{tmp_path / 'warehouse.db'}")


@pytest.fixture
def report_email(tmp_path: Path) -> ReportEmail:
    pdf = tmp_path / "客户满意度季度报告_2026Q3.pdf"
    pdf.write_bytes(b"%PDF-1.7 fake but exact bytes \x00\xff")
    csv = tmp_path / "整改清单_2026Q3.csv"
    csv.write_bytes("客户,负责人\nC1,王芳\n".encode("utf-8-sig"))
    return ReportEmail(
        report="satisfaction",
        quarter="2026Q3",
        title="客户满意度季度报告",
        headline=[{"label": "满意度(4-5分占比)", "value": "83.6%", "change": "+6.3 pp"}],
        attachments=[pdf, csv],
    )


def _smtp(port: int, **overrides) -> SmtpSettings:
    values = {
        "host": "127.0.0.1",
        "port": port,
        "sender": "reports@example.cn",
        "timeout_seconds": 5,
    }
    return SmtpSettings(**{**values, **overrides})


def test_send_arrives_intact_and_is_recorded(server, engine, report_email) -> None:
    inbox, port = server
    outcome = send_report(engine, _smtp(port), report_email, ["ceo@example.cn", "cfo@example.cn"])
    assert outcome == {"sent": ["ceo@example.cn", "cfo@example.cn"], "skipped": [], "failed": []}
    assert [rcpt for rcpt, _ in inbox.messages] == [["ceo@example.cn"], ["cfo@example.cn"]]
    message = inbox.messages[0][1]
    assert message["Subject"] == "客户满意度季度报告 2026Q3"
    wire = inbox.raw[0].decode("ascii").lower()  # 7-bit clean on the wire
    assert "subject: =?utf-8?" in wire  # RFC 2047 subject
    assert re.search(r"filename\*(0\*)?=utf-8''%e5%ae%a2", wire)  # RFC 2231 attachment name
    html = message.get_body(("html",)).get_content()
    assert "83.6%" in html and "满意度(4-5分占比)" in html
    files = {p.get_filename(): p.get_payload(decode=True) for p in message.iter_attachments()}
    assert files == {
        "客户满意度季度报告_2026Q3.pdf": report_email.attachments[0].read_bytes(),
        "整改清单_2026Q3.csv": report_email.attachments[1].read_bytes(),
    }
    csv_part = list(message.iter_attachments())[1]
    assert csv_part.get_content_type() == "text/csv" and csv_part.get_content_charset() == "utf-8"
    rows = read_table(engine, "report_deliveries")
    assert set(rows["status"]) == {"sent"} and len(rows) == 2
    assert set(rows["attempts"]) == {1}


def test_resend_is_idempotent(server, engine, report_email) -> None:
    inbox, port = server
    send_report(engine, _smtp(port), report_email, ["ceo@example.cn"])
    outcome = send_report(engine, _smtp(port), report_email, ["ceo@example.cn", "new@example.cn"])
    assert outcome["skipped"] == ["ceo@example.cn"] and outcome["sent"] == ["new@example.cn"]
    assert [rcpt for rcpt, _ in inbox.messages] == [["ceo@example.cn"], ["new@example.cn"]]
    assert sent_recipients(engine, "satisfaction", "2026Q3") == {"ceo@example.cn", "new@example.cn"}
    # another quarter is a different delivery
    assert sent_recipients(engine, "satisfaction", "2026Q4") == set()


def test_transient_failure_retries_with_backoff_then_fails_clearly(engine, report_email) -> None:
    inbox = Inbox(reply="451 4.3.0 mailbox busy, try later")
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    delays: list[float] = []
    try:
        with pytest.raises(DeliveryError, match=r"ceo@example\.cn.*3 attempt"):
            send_report(
                engine,
                _smtp(port, retries=3, retry_backoff_seconds=0.5),
                report_email,
                ["ceo@example.cn"],
                sleep=delays.append,
            )
    finally:
        controller.stop()
    assert inbox.data_calls == 3 and delays == [0.5, 1.0]
    assert sent_recipients(engine, "satisfaction", "2026Q3") == set()
    row = read_table(engine, "report_deliveries").iloc[0]
    assert row["status"] == "failed" and "451" in row["error"]


def test_permanent_failure_is_not_retried(engine, report_email) -> None:
    inbox = Inbox(reply="554 5.7.1 rejected")
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with pytest.raises(DeliveryError, match="554"):
            send_report(engine, _smtp(port), report_email, ["ceo@example.cn"], sleep=lambda s: None)
    finally:
        controller.stop()
    assert inbox.data_calls == 1


def test_refused_recipient_is_not_retried_and_the_others_still_get_it(engine, report_email) -> None:
    class Refusing(Inbox):
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
            if address.startswith("gone@"):
                return "550 5.1.1 no such user"
            envelope.rcpt_tos.append(address)
            return "250 OK"

    inbox = Refusing()
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    delays: list[float] = []
    try:
        with pytest.raises(DeliveryError, match=r"gone@example\.cn failed after 1 attempt.*550"):
            send_report(
                engine,
                _smtp(port, retries=3),
                report_email,
                ["gone@example.cn", "ceo@example.cn"],
                sleep=delays.append,
            )
    finally:
        controller.stop()
    assert delays == []
    assert [rcpt for rcpt, _ in inbox.messages] == [["ceo@example.cn"]]
    rows = read_table(engine, "report_deliveries").set_index("recipient")
    assert rows.loc["gone@example.cn", "status"] == "failed"
    assert rows.loc["gone@example.cn", "attempts"] == 1
    assert rows.loc["ceo@example.cn", "status"] == "sent"


def test_unreachable_server_fails_and_recovers_later(server, engine, report_email) -> None:
    closed = _free_port()  # nothing listens here
    with pytest.raises(DeliveryError, match="failed after 2 attempt"):
        send_report(
            engine,
            _smtp(closed, retries=2, timeout_seconds=1),
            report_email,
            ["ceo@example.cn"],
            sleep=lambda s: None,
        )
    assert sent_recipients(engine, "satisfaction", "2026Q3") == set()
    inbox, port = server
    assert send_report(engine, _smtp(port), report_email, ["ceo@example.cn"])["sent"] == [
        "ceo@example.cn"
    ]
    assert len(inbox.messages) == 1
