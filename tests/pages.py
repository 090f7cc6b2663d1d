"""Reading benscale's HTML pages in tests: their tables as a reader sees them (parsed with
the standard library), and the page in headless Chromium as a newcomer opens it: at 1280 px,
reading back what the page's own load handler measured (images decoded, document width,
tables that would need a scroll bar, the tallest table row, script errors), and a
screenshot."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from PIL import Image

from conftest import skip_unless_ci


@dataclass
class Table:
    """One table of a page: the section it is in, its header labels and its body rows."""

    section: str
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)

    def column(self, header: str) -> list[str]:
        """The cells of the column labelled ``header``."""
        i = self.headers.index(header)
        return [r[i] for r in self.rows]


class _Tables(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: list[Table] = []
        self.section = ""
        self._heading: list[str] | None = None
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._in_head = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("h2", "h3"):
            self._heading = []
        elif tag == "table":
            self.tables.append(Table(self.section))
        elif tag == "thead":
            self._in_head = True
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h2", "h3") and self._heading is not None:
            self.section = " ".join("".join(self._heading).split())
            self._heading = None
        elif tag == "thead":
            self._in_head = False
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self.tables:
            if self._in_head:
                self.tables[-1].headers = self._row
            else:
                self.tables[-1].rows.append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        for buf in (self._heading, self._cell):
            if buf is not None:
                buf.append(data)


def tables(html: str) -> list[Table]:
    """Every table of a page, in order."""
    parser = _Tables()
    parser.feed(html)
    return parser.tables


def table_in(html: str, section: str) -> Table:
    """The first table under the heading that starts with ``section``."""
    found = [t for t in tables(html) if t.section.startswith(section)]
    assert found, f"no table under a heading {section!r}: {[t.section for t in tables(html)]}"
    return found[0]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: The width a newcomer's laptop browser has.
WIDTH = 1280


@dataclass(frozen=True)
class PageCheck:
    """What the page measured in the browser, and the console's errors."""

    attrs: dict[str, int]
    console_errors: list[str]
    dom: str


def _flags(profile: Path) -> list[str]:
    if CHROMIUM is None:
        skip_unless_ci("chromium not installed (tools/install-system-deps.sh installs it); "
                       "the HTML page cannot be opened in a real browser")
    return [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--no-first-run",
            "--hide-scrollbars", f"--user-data-dir={profile}", "--enable-logging=stderr",
            "--v=0", "--virtual-time-budget=10000"]


def open_page(page: Path, profile: Path, height: int = 900) -> PageCheck:
    """Load ``page`` at WIDTH x ``height`` and return what its load handler recorded."""
    flags = _flags(profile)
    dom = subprocess.run([*flags, f"--window-size={WIDTH},{height}", "--dump-dom",
                          page.resolve().as_uri()], capture_output=True, text=True,
                         timeout=120, check=True)
    body = re.search(r"<body[^>]*>", dom.stdout)
    assert body, dom.stderr[-2000:]
    attrs = {k: int(v) for k, v in re.findall(r'data-([a-z-]+)="(\d+)"', body.group(0))}
    assert "images-loaded" in attrs, f"load handler did not run: {body.group(0)}"
    errors = [line for line in dom.stderr.splitlines()
              if "CONSOLE" in line and ("Uncaught" in line or "Error" in line)]
    return PageCheck(attrs, errors, dom.stdout)


def screenshot(page: Path, profile: Path, shot: Path, height: int) -> Image.Image:
    """A screenshot of the top ``height`` pixels of ``page`` at WIDTH."""
    subprocess.run([*_flags(profile), f"--screenshot={shot}", f"--window-size={WIDTH},{height}",
                    page.resolve().as_uri()], capture_output=True, timeout=120, check=True)
    with Image.open(shot) as im:
        return im.convert("RGB")


def assert_reads_at_laptop_width(check: PageCheck, images: int) -> None:
    """The layout rules of docs/report.md: every image decoded, nothing wider than the
    window, no table needing a scroll bar, compact rows, no script error."""
    a = check.attrs
    assert a["images-total"] == images and a["images-loaded"] == images, a
    assert a["viewport-width"] == WIDTH, a
    assert a["doc-width"] <= a["viewport-width"], a
    assert a["tables"] > 0 and a["tables-overflowing"] == 0, a
    assert a["max-row-height"] <= 80, a
    assert a["js-errors"] == 0 and not check.console_errors, check.console_errors
