"""Render both reports to PDF and read them back with poppler (pdftotext/pdffonts/pdfdetach)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pypdf import PdfReader
from pypdf.errors import FileNotDecryptedError

from pipeline.reporting import write_archive
from pipeline.reports.context import build_archive_context, build_satisfaction_context
from pipeline.reports.pdf import TemplateOnlyFetcher, write_pdf
from pipeline.reports.render import TEMPLATE_DIR, render_html
from pipeline.reports.worklist import worklist_xlsx
from pipeline.settings import Settings
from tests.reports.frames import (
    QUARTER,
    customer_quarter_frame,
    customers_frame,
    events_frame,
    findings_frame,
    metrics_frame,
    quarantine_frame,
    review_frame,
)


def _text(pdf: Path) -> str:
    return subprocess.run(
        ["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout


def _fonts(pdf: Path) -> str:
    return subprocess.run(["pdffonts", str(pdf)], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def satisfaction_pdf(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    settings = Settings(out_dir=tmp_path_factory.mktemp("out"))
    ctx = build_satisfaction_context(
        metrics_frame(), customer_quarter_frame(), quarantine_frame(), settings, QUARTER
    )
    pdf = write_pdf(render_html("satisfaction.html", ctx), settings.out_dir / "s.pdf")
    return pdf, ctx


def test_satisfaction_pdf_has_chinese_text_figures_and_cjk_font(satisfaction_pdf) -> None:
    pdf, ctx = satisfaction_pdf
    text = _text(pdf)
    assert "客户满意度季度报告" in text and "示例科技股份有限公司" in text
    assert "机密" in text and "目录" in text
    for kpi in ctx["kpis"]:
        assert kpi["value"] in text
    assert "value_a_share" in text  # thresholds printed in the appendix
    fonts = _fonts(pdf)
    cjk = [line for line in fonts.splitlines() if "CJK" in line]
    assert cjk and all(" yes yes " in line for line in cjk)  # embedded + subset
    pages = len(PdfReader(pdf).pages)
    assert 6 <= pages <= 20
    assert f"{pages} / {pages}" in text  # page X of Y in the footer


@pytest.fixture(scope="module")
def archive_report(tmp_path_factory: pytest.TempPathFactory):
    settings = Settings(
        out_dir=tmp_path_factory.mktemp("out"), reports={"archive_pdf_password": "s3cret"}
    )
    customers = customers_frame()
    customers.loc[0, "name"] = '<img src="http://evil.example/x.png">恶意公司<script>x</script>'
    ctx = build_archive_context(
        findings_frame(40),
        findings_frame(20, QUARTER.previous()),
        customers,
        customer_quarter_frame(),
        review_frame(),
        events_frame(),
        settings,
        QUARTER,
    )
    return write_archive(ctx, settings, QUARTER), ctx


def test_archive_pdf_is_encrypted_with_worklist_attached(archive_report) -> None:
    report, ctx = archive_report
    assert report.pdf.name == "档案完善建议报告_2026Q3.pdf"
    reader = PdfReader(report.pdf)
    assert reader.is_encrypted
    with pytest.raises(FileNotDecryptedError):
        _ = reader.pages[0].extract_text()
    reader.decrypt("s3cret")
    names = set(reader.attachments)
    # /UF carries the Unicode names (WeasyPrint also writes a UTF-8 /F that pypdf lists too)
    assert {"整改清单_2026Q3.csv", "整改清单_2026Q3.xlsx"} <= names
    csv_bytes = reader.attachments["整改清单_2026Q3.csv"][0]
    assert csv_bytes == (report.pdf.parent / "整改清单_2026Q3.csv").read_bytes()
    assert csv_bytes.decode("utf-8-sig").count("\n") == len(ctx["worklist"]) + 1
    text = _text_decrypted(report.pdf, "s3cret")
    assert "档案完善建议报告" in text and "2026-10-31" in text
    assert "138******" in text and "138 1234" not in text
    # customer-supplied markup is printed as text, never interpreted
    assert '<img src="http://evil.example/x.png">恶意公司' in text.replace("\n", "")


def test_very_long_customer_names_are_cut_in_the_pdf_and_whole_in_the_worklist(
    tmp_path: Path,
) -> None:
    long_name = "超长名称有限公司" * 62 + "ABCD"  # 500 characters
    customers = customers_frame()
    customers.loc[0, "name"] = long_name
    ctx = build_archive_context(
        findings_frame(40),
        None,
        customers,
        customer_quarter_frame(),
        None,
        None,
        Settings(out_dir=tmp_path),
        QUARTER,
    )
    html = render_html("archive.html", ctx)
    assert long_name not in html
    assert long_name[:59] + "…" in html
    assert long_name in ctx["worklist"]["customer_name"].tolist()


def test_a_long_worklist_s_workbook_is_written_by_a_worker_process(
    archive_report, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``WORKBOOK_IN_WORKER_ROWS`` rows the workbook comes from another process while
    the PDF is laid out: the same bytes as written here, and embedded in the PDF."""
    import pipeline.reporting as reporting

    _report, ctx = archive_report
    monkeypatch.setattr(reporting, "WORKBOOK_IN_WORKER_ROWS", 1)
    report = write_archive(ctx, Settings(out_dir=tmp_path), QUARTER)
    expected = worklist_xlsx(ctx["worklist"], ctx["language"])
    assert (tmp_path / str(QUARTER) / "整改清单_2026Q3.xlsx").read_bytes() == expected
    assert PdfReader(report.pdf).attachments["整改清单_2026Q3.xlsx"][0] == expected


def _text_decrypted(pdf: Path, password: str) -> str:
    return subprocess.run(
        ["pdftotext", "-upw", password, str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout


def test_fetcher_refuses_network_and_files_outside_templates(tmp_path: Path) -> None:
    secret = tmp_path / "secret.css"
    secret.write_text("body { color: red }")
    html = (
        '<link rel="stylesheet" href="report.css">'
        f'<link rel="stylesheet" href="{secret.as_uri()}">'
        '<img src="http://127.0.0.1:9/x.png"><img src="../../pipeline/settings.py"><p>x</p>'
    )
    fetcher = TemplateOnlyFetcher()
    write_pdf(html, tmp_path / "x.pdf", fetcher=fetcher)
    assert secret.as_uri() in fetcher.blocked
    assert "http://127.0.0.1:9/x.png" in fetcher.blocked
    assert any(url.endswith("pipeline/settings.py") for url in fetcher.blocked)
    assert not any(url.endswith("report.css") for url in fetcher.blocked)
    assert (TEMPLATE_DIR / "report.css").is_file()


def test_english_report_renders(tmp_path: Path) -> None:
    settings = Settings(out_dir=tmp_path, reports={"language": "en"})
    ctx = build_satisfaction_context(metrics_frame(3), None, None, settings, QUARTER)
    text = _text(write_pdf(render_html("satisfaction.html", ctx), tmp_path / "en.pdf"))
    assert "Quarterly Customer Satisfaction Report" in text and "Contents" in text
    assert "No data for this period." in text  # no tier data given
