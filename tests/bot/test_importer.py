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


# What an import says when the file is not right (issue #20): each in the creator's words, exit 2.

HEADER = "platform,external_id,display_name,kind,occurred_at,amount,currency,event_id,text\n"


@pytest.fixture
def superfan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run ``superfan`` (zh-TW, or ``locale``) on a fresh SQLite file."""
    from typer.testing import CliRunner

    from bot.cli import app

    monkeypatch.delenv("SUPERFAN_CONFIG", raising=False)

    def run(*args: str, expect: int = 0, locale: str = "zh-TW"):
        cfg = tmp_path / "superfan.toml"
        cfg.write_text(f'[creator]\nlocale = "{locale}"\n[database]\nurl = "sqlite+aiosqlite:///{tmp_path / "s.db"}"\n',
                       encoding="utf-8")
        result = CliRunner().invoke(app, ["--config", str(cfg), *args])
        assert result.exit_code == expect, (result.stdout, result.stderr)
        return result

    return run


def _fans(superfan) -> list[dict[str, object]]:
    import json

    return json.loads(superfan("fans", "--json").stdout)


def test_a_short_row_says_it_is_short_and_nothing_is_imported(superfan, tmp_path: Path) -> None:
    path = tmp_path / "cut.csv"
    path.write_text(HEADER + "line,U1,小慧,message,2026-10-05T12:30:00+08:00,,,m1,嗨\nline,U2,阿翔\n", encoding="utf-8")
    result = superfan("import", str(path), expect=2, locale="en")
    assert result.stderr == (f"Error: {path}:3: the row is short: 3 values for 9 columns (no kind, occurred_at).\n")
    assert _fans(superfan) == []
    zh = superfan("import", str(path), expect=2)
    assert zh.stderr == f"錯誤：{path}:3：這一列太短：只有 3 個值，欄位有 9 個（缺 kind、occurred_at）。\n"


def test_an_empty_file_says_so_and_names_only_the_required_columns(superfan, tmp_path: Path) -> None:
    for name in ("empty.csv", "blank.jsonl"):
        path = tmp_path / name
        path.write_text("" if name.endswith("csv") else "\n  \n", encoding="utf-8")
        result = superfan("import", str(path), expect=2, locale="en")
        assert result.stderr == (f"Error: {path} is empty. Its first line names the columns; required are "
                                 "platform, external_id, kind, occurred_at.\n")
    header_only = tmp_path / "header.csv"
    header_only.write_text(HEADER, encoding="utf-8")
    assert "0" in superfan("import", str(header_only)).stdout  # columns and no rows: nothing to import


def test_a_folder_is_a_usage_error_in_one_line(superfan, tmp_path: Path) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    result = superfan("import", str(folder), expect=2)
    assert result.stderr == f"錯誤：{folder} 是資料夾；請指定裡面的 CSV 或 JSONL 檔。\n"


def test_an_unknown_kind_is_refused_with_the_known_ones_unless_allowed(superfan, tmp_path: Path) -> None:
    path = tmp_path / "kinds.csv"
    path.write_text(HEADER + "line,U1,小慧,message,2026-10-05T12:30:00+08:00,,,m1,\n"
                    "line,U1,小慧,livestream_gift,2026-10-05T12:40:00+08:00,,,g1,\n", encoding="utf-8")
    refused = superfan("import", str(path), expect=2, locale="en")
    assert refused.stderr.startswith(f"Error: {path}:3: Unknown kind “livestream_gift”. Known kinds: checkin, ")
    assert "message" in refused.stderr and "purchase" in refused.stderr and "--allow-new-kinds" in refused.stderr
    assert _fans(superfan) == []
    superfan("import", str(path), "--allow-new-kinds")
    (fan,) = _fans(superfan)
    doc = __import__("json").loads(superfan("fan", str(fan["id"]), "--json").stdout)
    assert sorted(i["kind"] for i in doc["interactions"]) == ["livestream_gift", "message"]


async def _snapshot(sessions) -> tuple[dict[str, float], dict[str, tuple[float, str]]]:
    from sqlalchemy import select

    from crm.models import Fan, Identity, Interaction

    async with sessions() as s:
        points = dict((await s.execute(select(Interaction.source_event_id, Interaction.points))).all())
        fans = {ext: (base, tier) for ext, base, tier in (await s.execute(
            select(Identity.external_id, Fan.score_base, Fan.tier).join(Fan, Fan.id == Identity.fan_id))).all()}
    return points, fans


async def test_a_file_larger_than_a_chunk_is_staged_and_ends_as_one_chunk_would(tmp_path: Path, sessions, settings,
                                                                               now) -> None:
    from sqlalchemy import delete, func, inspect, select

    from bot.importer import import_file
    from crm.errors import BadInput
    from crm.models import Base, Interaction

    path = tmp_path / "big.csv"
    # Rows of seven fans in no order: chatty days past the message cap, a repeated event id.
    rows = [f"line,U{n % 7},粉絲{n % 7},message,2026-10-{1 + n % 3:02d}T12:{n % 60:02d}:{n % 7:02d}+08:00,,,e{n},嗨"
            for n in range(250)]
    rows.insert(120, rows[3])
    path.write_text(HEADER + "\n".join(rows) + "\n", encoding="utf-8")
    async with sessions.begin() as s:
        staged = await import_file(s, path, settings, now, chunk_rows=40)  # an empty table: the fast path
    assert (staged.stored, staged.duplicates, staged.new_fans) == (250, 1, 7)
    chunked = await _snapshot(sessions)
    async with sessions() as s:
        indexes = {ix["name"] for ix in await (await s.connection()).run_sync(
            lambda c: inspect(c).get_indexes("interactions"))}
    assert {"uq_interactions_platform_source_event_id", "ix_interactions_occurred_at"} <= indexes
    async with sessions.begin() as s:
        again = await import_file(s, path, settings, now, chunk_rows=40)  # staged against stored rows
    assert (again.stored, again.duplicates, again.new_fans) == (0, 251, 0)
    assert await _snapshot(sessions) == chunked

    async with sessions.begin() as s:
        for table in reversed(Base.metadata.sorted_tables):
            await s.execute(delete(table))
    async with sessions.begin() as s:
        whole = await import_file(s, path, settings, now)  # one chunk: recorded as it is
    assert (whole.stored, whole.duplicates, whole.new_fans) == (250, 1, 7)
    one_chunk = await _snapshot(sessions)
    assert one_chunk[0] == chunked[0] and one_chunk[1].keys() == chunked[1].keys()
    for ext, (base, tier) in one_chunk[1].items():
        assert chunked[1][ext][0] == pytest.approx(base) and chunked[1][ext][1] == tier

    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "\n".join(r.replace(",e", ",x") for r in rows) + "\nline,U1,小慧,message,昨天,,,x,\n",
                   encoding="utf-8")
    with pytest.raises(BadInput) as caught:
        async with sessions.begin() as s:
            await import_file(s, bad, settings, now, chunk_rows=40)
    assert caught.value.params["where"] == f"{bad}:253"
    async with sessions() as s:
        assert (await s.execute(select(func.count()).select_from(Interaction))).scalar_one() == 250


def test_rows_read_column_by_column_are_what_reading_row_by_row_makes_of_them(tmp_path: Path) -> None:
    # The column path (most chunks) must give each row exactly what parse_fields gives it, and hand
    # anything out of the ordinary to the row path: times in other offsets and with Z, upper-case
    # platforms and kinds, purchases, rows without an event id (their digest), a NUL in a text.
    from bot.import_columns import plain_columns
    from bot.importer import _checked, _parsed
    from crm.import_staging import ImportRows

    path = tmp_path / "mixed.csv"
    rows = [
        "LINE,U1,小慧,Message,2026-10-05T12:30:00+08:00,,,m1,嗨",
        "discord,42,,reaction,2026-10-05T04:30:00Z,,,,",
        "line,U2, 阿翔 ,purchase,2026-10-05T04:30:00.123456-02:00,\"1,280.50\",twd,o1,",
        "line,U1,小慧,message,1999-12-31T23:59:59+00:00,,,,\"第一行\r\n第二行\"",
        "line,U3,,checkin,2026-10-05T12:30:00+08:00,,,c1,",
    ]
    path.write_text(HEADER.replace("text\n", "text,fan\n") + "\n".join(f"{r},p{n % 2}" for n, r in enumerate(rows)) + "\n",
                    encoding="utf-8")
    records = list(importer._records(path, None))
    by_column = _checked(path, records, None)
    assert plain_columns(records, None) == by_column  # read column by column, not handed on
    by_row = ImportRows.of(_parsed(path, record, None) for record in records)
    assert by_column == by_row
    assert by_column.event_id[1] is None and by_column.with_event_ids().event_id[1].startswith("h:")
    assert by_column.amount[2] == "1280.50" and by_column.currency[2] == "TWD"

    with_nul = tmp_path / "nul.csv"
    with_nul.write_text(HEADER + "line,U1,小慧,message,2026-10-05T12:30:00+08:00,,,m1,a\x00b\n", encoding="utf-8")
    (row,) = read_file(with_nul)
    assert row.item.text == "a\ufffdb"


@pytest.mark.parametrize("bad", ["2026-10-05T12:30:00", "1969-12-31T23:59:59+00:00", "昨天"])
def test_a_bad_time_in_a_chunk_of_good_rows_is_named_by_its_line(tmp_path: Path, bad: str) -> None:
    from crm.errors import BadInput

    path = tmp_path / "times.csv"
    good = [f"line,U{n},粉絲,message,2026-10-05T12:30:00+08:00,,,e{n}," for n in range(30)]
    good.insert(17, f"line,U99,粉絲,message,{bad},,,bad,")
    path.write_text(HEADER + "\n".join(good) + "\n", encoding="utf-8")
    with pytest.raises(BadInput) as caught:
        read_file(path)
    assert caught.value.params["where"] == f"{path}:19"


async def test_of_two_rows_with_one_event_id_the_first_in_the_file_is_kept(tmp_path: Path, sessions, settings,
                                                                         now) -> None:
    # The repeat belongs to another fan, so it is staged in another part, read back in no
    # particular order against the first: still the first row of the file wins.
    from sqlalchemy import select

    from bot.importer import import_file
    from crm.models import Identity, Interaction

    path = tmp_path / "twice.csv"
    rows = [f"line,U{n % 9},粉絲{n % 9},message,2026-10-0{1 + n % 3}T12:{n % 60:02d}:00+08:00,,,e{n},嗨"
            for n in range(200)]
    rows += [f"line,U{100 + n},別人,message,2026-10-01T13:00:00+08:00,,,e{n}," for n in range(0, 200, 7)]
    path.write_text(HEADER + "\n".join(rows) + "\n", encoding="utf-8")
    async with sessions.begin() as s:
        result = await import_file(s, path, settings, now, chunk_rows=40)
    assert (result.stored, result.duplicates, result.new_fans) == (200, 29, 9)
    async with sessions() as s:
        owners = dict((await s.execute(select(Interaction.source_event_id, Identity.external_id)
                                       .join(Identity, Identity.fan_id == Interaction.fan_id))).all())
    assert len(owners) == 200 and all(owners[f"e{n}"] == f"U{n % 9}" for n in range(200))


async def test_event_ids_whose_hashes_collide_are_still_told_apart(tmp_path: Path, sessions, settings, now,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Repeats are looked for by hash first; rows whose hashes are equal but whose event ids are
    # not must all be stored (every hash made equal here), and a true repeat still left out.
    import crm.import_staging as staging
    from bot.importer import import_file

    monkeypatch.setattr(staging, "hash", lambda _key: 7, raising=False)
    path = tmp_path / "collide.csv"
    rows = [f"line,U{n % 5},粉絲,message,2026-10-0{1 + n % 3}T12:{n % 60:02d}:00+08:00,,,e{n}," for n in range(90)]
    rows.append("line,U4,粉絲,message,2026-10-03T12:00:00+08:00,,,e8,")
    path.write_text(HEADER + "\n".join(rows) + "\n", encoding="utf-8")
    async with sessions.begin() as s:
        result = await import_file(s, path, settings, now, chunk_rows=20)
    assert (result.stored, result.duplicates, result.new_fans) == (90, 1, 5)
