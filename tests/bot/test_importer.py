"""Reading an import file: what a creator's spreadsheet export looks like, and the progress a long read reports."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

import bot.importer as importer
from bot.importer import read_file


def test_an_excel_style_csv_reads_as_written(tmp_path: Path) -> None:
    # BOM, CRLF, columns in another order, a repeated column (the later one wins, as with
    # csv.DictReader), a quoted value spanning lines, a blank line, a row with more values than
    # columns and a short row.
    path = tmp_path / "shop.csv"
    path.write_bytes(
        "\ufeffexternal_id,platform,kind,occurred_at,display_name,amount,currency,text,fan,display_name\r\n"
        "U1, LINE ,MESSAGE,2026-10-05T12:30:00+08:00,舊名字,,,\"第一行\r\n第二行, 有逗號\",p1, 小慧 \r\n"
        "\r\n"
        "U2,line,purchase,2026-10-05T04:30:00Z,,\"1,280.50\",twd,,,阿翔,extra,values\r\n"
        "123,discord,reaction,2026-10-05T12:30:00+08:00\r\n".encode()
    )
    rows = read_file(path)
    assert [r.line for r in rows] == [3, 5, 6]
    first, second, third = (r.item for r in rows)
    assert (first.platform, first.external_id, first.kind, first.display_name) == ("line", "U1", "message", "小慧")
    assert first.text == "第一行\r\n第二行, 有逗號" and rows[0].fan_ref == "p1"
    assert first.occurred_at == datetime(2026, 10, 5, 4, 30, tzinfo=UTC)
    assert (second.kind, second.amount, second.currency, second.display_name) == (
        "purchase", Decimal("1280.50"), "TWD", "阿翔")
    assert second.occurred_at == first.occurred_at and rows[1].fan_ref is None
    assert (third.kind, third.amount, third.display_name, third.text) == ("reaction", None, None, None)


def test_jsonl_values_that_are_not_text(tmp_path: Path) -> None:
    path = tmp_path / "orders.jsonl"
    path.write_text(
        '{"platform": "line", "external_id": " U1 ", "kind": "purchase", "occurred_at": "2026-10-05T12:30:00+08:00",'
        ' "amount": 1280, "currency": "TWD", "event_id": null, "fan": 7}\n\n'
        '{"platform": "line", "external_id": "U2", "kind": "message", "occurred_at": "2026-10-05T12:31:00+08:00"}\n',
        encoding="utf-8",
    )
    rows = read_file(path)
    assert [r.line for r in rows] == [1, 3]
    assert rows[0].item.external_id == "U1" and rows[0].item.amount == Decimal(1280) and rows[0].fan_ref == "7"
    assert rows[0].item.source_event_id is None and rows[1].item.amount is None


def test_a_long_read_reports_how_far_into_the_file_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importer, "PROGRESS_EVERY", 100)
    path = tmp_path / "big.csv"
    lines = ["platform,external_id,display_name,kind,occurred_at,event_id,text"]
    lines += [f"line,U{n % 50},粉絲{n % 50},message,2026-10-05T12:30:00+08:00,ev{n},謝謝分享今天的影片！"
              for n in range(1000)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    reported: list[int] = []
    assert len(read_file(path, progress=reported.append)) == 1000
    size = path.stat().st_size
    assert len(reported) == 10
    assert reported == sorted(reported) and 0 < reported[0] < reported[-1] <= size
    assert reported[-1] >= size * 0.5  # bytes, not characters: CJK text is three bytes a character
