"""Write HTML to PDF with WeasyPrint; resources come only from reports/templates/ or data: URIs."""

from __future__ import annotations

import logging
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from weasyprint import HTML, Attachment
from weasyprint.document import Document
from weasyprint.urls import URLFetcher, URLFetcherResponse

from pipeline.reports.render import TEMPLATE_DIR

log = logging.getLogger(__name__)


class BlockedResourceError(ValueError):
    """A template asked for a resource outside the template folder (or on the network)."""


class TemplateOnlyFetcher(URLFetcher):
    """Serves ``data:`` URIs and files under the template folder; refuses everything else.

    Refused URLs are remembered in ``blocked`` so tests and logs can show what was asked for.
    """

    def __init__(self, root: Path = TEMPLATE_DIR) -> None:
        super().__init__(allowed_protocols=("file", "data"))
        self.root = root.resolve()
        self.blocked: list[str] = []

    def fetch(self, url: str, headers=None) -> URLFetcherResponse:
        scheme = urlsplit(url).scheme.lower()
        if scheme == "data":
            return super().fetch(url, headers)
        if scheme == "file":
            path = Path(unquote(urlsplit(url).path)).resolve()
            if path.is_relative_to(self.root) and path.is_file():
                mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                headers = {"Content-Type": mime}
                return URLFetcherResponse(url, path.read_bytes(), headers=headers, status=200)
        self.blocked.append(url)
        log.warning("report refused to fetch %s", url)
        raise BlockedResourceError(f"resource not allowed in reports: {url}")


@dataclass(frozen=True)
class PdfAttachment:
    """A file embedded inside the PDF (e.g. the worklist)."""

    filename: str
    data: bytes
    description: str = ""


def layout_pdf(html: str, fetcher: TemplateOnlyFetcher | None = None) -> Document:
    """Lay out and paginate ``html`` (the slow half of :func:`write_pdf`); relative URLs
    resolve inside reports/templates/."""
    fetcher = fetcher or TemplateOnlyFetcher()
    return HTML(string=html, base_url=str(TEMPLATE_DIR) + "/", url_fetcher=fetcher).render()


def write_pdf(
    html: str | Document,
    path: Path,
    attachments: list[PdfAttachment] | None = None,
    fetcher: TemplateOnlyFetcher | None = None,
) -> Path:
    """Write ``html`` (or a document :func:`layout_pdf` laid out) to ``path`` as a PDF."""
    fetcher = fetcher or TemplateOnlyFetcher()
    document = html if isinstance(html, Document) else layout_pdf(html, fetcher)
    embedded = [
        Attachment(string=a.data, name=a.filename, description=a.description, url_fetcher=fetcher)
        for a in attachments or []
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    document.write_pdf(path, attachments=embedded, pdf_identifier=b"crm-pipeline")
    log.info("wrote %s (%d bytes)", path, path.stat().st_size)
    return path


def encrypt_pdf(path: Path, password: str) -> None:
    """Encrypt the PDF at ``path`` in place with AES-256 (pypdf)."""
    from pypdf import PdfReader, PdfWriter

    reader = PdfReader(path)
    writer = PdfWriter(clone_from=reader)
    writer.encrypt(user_password=password, owner_password=password, algorithm="AES-256")
    with path.open("wb") as handle:
        writer.write(handle)
