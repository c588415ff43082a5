"""A minimal .xlsx writer (one sheet, inline strings, integers/floats), stdlib only.

The MMBench server takes an Excel submission; LLaVA writes it with pandas + openpyxl, which we do not want as
dependencies for one file. An xlsx is a zip of a few XML parts; this writes the smallest set Excel, LibreOffice
and openpyxl open: content types, package relationships, workbook (+ its relationships) and one worksheet.
"""
from __future__ import annotations

import io
import math
import re
import zipfile
from typing import Sequence, Union
from xml.sax.saxutils import escape

CellValue = Union[str, int, float, None]

SPREADSHEET_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
RELATIONSHIPS_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
PACKAGE_RELATIONSHIPS_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
# Characters XML 1.0 cannot carry at all (control characters other than tab, newline, carriage return).
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
# Excel refuses cells longer than this.
MAX_CELL_CHARS = 32767

_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
    '<Override PartName="/xl/worksheets/sheet1.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
    '</Types>'
)
_PACKAGE_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    f'<Relationships xmlns="{PACKAGE_RELATIONSHIPS_NS}">'
    '<Relationship Id="rId1" '
    'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
    'Target="xl/workbook.xml"/>'
    '</Relationships>'
)
_WORKBOOK_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    f'<Relationships xmlns="{PACKAGE_RELATIONSHIPS_NS}">'
    '<Relationship Id="rId1" '
    'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" '
    'Target="worksheets/sheet1.xml"/>'
    '</Relationships>'
)


def column_letter(index: int) -> str:
    """0 -> "A", 25 -> "Z", 26 -> "AA"."""
    letters = ""
    index += 1
    while index:
        index, remainder = divmod(index - 1, 26)
        letters = chr(ord("A") + remainder) + letters
    return letters


def _cell_xml(reference: str, value: CellValue) -> str:
    if value is None:
        return ""  # an empty cell is simply absent
    if isinstance(value, bool):
        value = str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return ""  # NaN/inf have no xlsx number form; pandas writes NaN as an empty cell too
    if isinstance(value, (int, float)):
        return f'<c r="{reference}"><v>{value!r}</v></c>'
    text = _XML_ILLEGAL.sub("", str(value))[:MAX_CELL_CHARS]
    return (f'<c r="{reference}" t="inlineStr"><is><t xml:space="preserve">{escape(text)}</t></is></c>')


def _sheet_xml(rows: Sequence[Sequence[CellValue]]) -> str:
    row_xml = []
    for row_number, row in enumerate(rows, start=1):
        cells = "".join(_cell_xml(f"{column_letter(col)}{row_number}", value) for col, value in enumerate(row))
        row_xml.append(f'<row r="{row_number}">{cells}</row>')
    return ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            f'<worksheet xmlns="{SPREADSHEET_NS}"><sheetData>{"".join(row_xml)}</sheetData></worksheet>')


def _workbook_xml(sheet_name: str) -> str:
    return ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            f'<workbook xmlns="{SPREADSHEET_NS}" xmlns:r="{RELATIONSHIPS_NS}">'
            f'<sheets><sheet name="{escape(sheet_name, {chr(34): "&quot;"})}" sheetId="1" r:id="rId1"/></sheets>'
            '</workbook>')


def xlsx_bytes(header: Sequence[str], rows: Sequence[Sequence[CellValue]], sheet_name: str = "Sheet1") -> bytes:
    """The bytes of a one-sheet workbook: `header` in row 1, then `rows`."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", _CONTENT_TYPES)
        archive.writestr("_rels/.rels", _PACKAGE_RELS)
        archive.writestr("xl/workbook.xml", _workbook_xml(sheet_name))
        archive.writestr("xl/_rels/workbook.xml.rels", _WORKBOOK_RELS)
        archive.writestr("xl/worksheets/sheet1.xml", _sheet_xml([list(header), *rows]))
    return buffer.getvalue()
