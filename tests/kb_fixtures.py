"""Small document files in every format kofin ingests, built in the test (no binary fixtures).

PDF: no Korean font is installed on the build machines (`fc-list :lang=ko` is empty) and
reportlab/fpdf2 need one to write Korean, so the PDF is written by hand: a Type0 font with
Identity-H encoding (each character code is its Unicode code point) and a ToUnicode CMap that
maps codes back to text. That is exactly the text layer pypdf reads from real Korean PDFs; no
glyphs are needed to extract text.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path


def write_pdf(path: Path, pages: list[list[str]], title: str = "") -> Path:
    chars = sorted({ch for page in pages for line in page for ch in line})
    cmap = [
        "/CIDInit /ProcSet findresource begin 12 dict begin begincmap",
        "/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def",
        "/CMapName /Adobe-Identity-UCS def /CMapType 2 def",
        "1 begincodespacerange <0000> <FFFF> endcodespacerange",
    ]
    for i in range(0, len(chars), 100):
        group = chars[i : i + 100]
        cmap.append(f"{len(group)} beginbfchar")
        cmap += [f"<{ord(c):04X}> <{ord(c):04X}>" for c in group]
        cmap.append("endbfchar")
    cmap.append("endcmap CMapName currentdict /CMap defineresource pop end end")
    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    def stream(data: bytes) -> bytes:
        return b"<< /Length %d >>\nstream\n" % len(data) + data + b"\nendstream"

    catalog = add(b"")  # filled in below, once the page tree's number is known
    pages_obj = add(b"")
    descriptor = add(
        b"<< /Type /FontDescriptor /FontName /KofinTest /Flags 4 /FontBBox [0 0 1000 1000] /ItalicAngle 0 "
        b"/Ascent 880 /Descent -120 /CapHeight 700 /StemV 80 >>"
    )
    cid = add(
        b"<< /Type /Font /Subtype /CIDFontType2 /BaseFont /KofinTest "
        b"/CIDSystemInfo << /Registry (Adobe) /Ordering (Identity) /Supplement 0 >> /FontDescriptor %d 0 R /DW 1000 >>"
        % descriptor
    )
    tounicode = add(stream("\n".join(cmap).encode()))
    font = add(
        b"<< /Type /Font /Subtype /Type0 /BaseFont /KofinTest /Encoding /Identity-H "
        b"/DescendantFonts [%d 0 R] /ToUnicode %d 0 R >>" % (cid, tounicode)
    )
    kids = []
    for lines in pages:
        ops = ["BT /F1 11 Tf 16 TL 50 780 Td"]
        for line in lines:
            ops.append("<" + "".join(f"{ord(c):04X}" for c in line) + "> Tj T*")
        ops.append("ET")
        content = add(stream("\n".join(ops).encode()))
        kids.append(
            add(
                b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 595 842] "
                b"/Resources << /Font << /F1 %d 0 R >> >> /Contents %d 0 R >>" % (pages_obj, font, content)
            )
        )
    objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % pages_obj
    objects[pages_obj - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(b"%d 0 R" % k for k in kids),
        len(kids),
    )
    info = add(b"<< /Title <FEFF" + title.encode("utf-16-be").hex().upper().encode() + b"> >>") if title else None

    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    trailer = (
        b"<< /Size %d /Root %d 0 R" % (len(objects) + 1, catalog) + (b" /Info %d 0 R" % info if info else b"") + b" >>"
    )
    out += b"trailer\n" + trailer + b"\nstartxref\n%d\n%%%%EOF\n" % xref
    path.write_bytes(bytes(out))
    return path


def write_docx(path: Path) -> Path:
    import docx

    d = docx.Document()
    d.core_properties.title = "가람 외화예금 업무 안내"
    d.add_heading("1. 외화예금 개요", level=1)
    d.add_paragraph("외화예금은 미국 달러, 유로, 엔화로 가입할 수 있다. 외화예금도 예금자보호 대상이다.")
    d.add_heading("2. 환전 수수료", level=1)
    table = d.add_table(rows=3, cols=2)
    for r, (a, b) in enumerate([("통화", "우대율"), ("USD", "50%"), ("JPY", "30%")]):
        table.rows[r].cells[0].text, table.rows[r].cells[1].text = a, b
    d.add_paragraph("환전 수수료 우대율은 거래 실적에 따라 달라진다.")
    d.save(str(path))
    return path


def write_hwpx(path: Path) -> Path:
    ns = 'xmlns:hs="http://www.hancom.co.kr/hwpml/2011/section" xmlns:hp="http://www.hancom.co.kr/hwpml/2011/paragraph"'

    def p(text: str) -> str:
        return f"<hp:p><hp:run><hp:t>{text}</hp:t></hp:run></hp:p>"

    cells = "".join(
        "<hp:tr>" + "".join(f"<hp:tc><hp:subList>{p(c)}</hp:subList></hp:tc>" for c in row) + "</hp:tr>"
        for row in [("구분", "한도"), ("영업점", "1천만원"), ("본부", "5천만원")]
    )
    section = (
        f'<?xml version="1.0" encoding="UTF-8"?><hs:sec {ns}>'
        + p("제1조(목적) 이 규정은 여신 전결 한도를 정함을 목적으로 한다.")
        + p("제2조(전결 한도) 영업점장의 신용대출 전결 한도는 다음 표와 같다.")
        + f"<hp:p><hp:run><hp:tbl>{cells}</hp:tbl></hp:run></hp:p>"
        + "</hs:sec>"
    )
    hpf = (
        '<?xml version="1.0" encoding="UTF-8"?><opf:package xmlns:opf="http://www.idpf.org/2007/opf/">'
        "<opf:metadata><opf:title>여신 전결 규정</opf:title></opf:metadata></opf:package>"
    )
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mimetype", "application/hwp+zip")
        z.writestr("Contents/content.hpf", hpf)
        z.writestr("Contents/section0.xml", section)
    return path


def write_corpus(folder: Path) -> Path:
    """One file per format, Korean text, known headings, groups and pages."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "guide.md").write_text(
        "---\ntitle: 가람 정기예금 안내\ngroups: [all]\n---\n# 가람 정기예금 안내\n## 3. 중도해지\n"
        "만기 전에 해지하면 중도해지이율을 적용한다. 중도해지이율은 경과 기간에 따라 다르다.\n",
        encoding="utf-8",
    )
    (folder / "notice.txt").write_text(
        "전산 점검 안내\n\n토요일 새벽 2시부터 4시까지 인터넷뱅킹 이용이 중단된다.\n", encoding="utf-8"
    )
    (folder / "policy.html").write_text(
        "<html><head><title>개인정보 처리방침</title></head><body><h2>제5조(보유 기간)</h2>"
        "<p>고객의 거래 정보는 거래 종료 후 5년간 보관한다.</p><script>ignore()</script></body></html>",
        encoding="utf-8",
    )
    write_pdf(
        folder / "rules.pdf",
        [
            ["제1조(목적) 이 규정은 창구 현금 시재 관리를 정한다."],
            ["제2조(시재 한도) 창구별 현금 시재 한도는 3천만원이다."],
        ],
        title="현금 시재 관리 규정",
    )
    write_docx(folder / "fx.docx")
    write_hwpx(folder / "credit.hwpx")
    rows = [
        {
            "id": "AML-001",
            "title": "의심거래보고 기준",
            "text": "제3조(보고 기준) 1천만원 이상 현금 거래가 의심스러우면 의심거래보고를 한다.",
            "metadata": {"groups": ["compliance"]},
        },
        {
            "id": "AML-002",
            "title": "고객확인 절차",
            "text": "신규 계좌 개설 시 실제 소유자를 확인한다.",
            "metadata": {"groups": ["compliance", "branch"]},
        },
    ]
    (folder / "aml.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return folder
