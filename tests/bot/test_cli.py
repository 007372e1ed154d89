"""The ``superfan`` command as a creator uses it: import, fans, fan, export round trip, errors."""

from __future__ import annotations

import csv
import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import app

EXAMPLE = Path(__file__).parents[2] / "examples" / "community.csv"


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run ``superfan`` with a config pointing at a fresh SQLite file."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SUPERFAN_CONFIG", raising=False)

    def run(*args: str, db: str = "main.db", expect: int | None = 0):
        cfg = tmp_path / f"{db}.toml"
        cfg.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path / db}"\n', encoding="utf-8")
        result = CliRunner().invoke(app, ["--config", str(cfg), *args])
        if expect is not None:
            assert result.exit_code == expect, (result.stdout, result.stderr)
        return result

    return run


def test_import_then_fan_json_shows_history_in_design_shape(cli):
    out = cli("import", str(EXAMPLE))
    assert "9" in out.stdout
    doc = json.loads(cli("fan", "line:U4af4980629f1e0b7c1a2b3c4d5e6f701", "--json").stdout)
    for key in ("id", "display_name", "tier", "score", "score_breakdown", "identities", "preferences", "tags",
                "notes", "interactions", "open_conversation"):
        assert key in doc
    assert doc["display_name"] == "小慧"
    assert [i["kind"] for i in doc["interactions"]] == ["checkin", "purchase", "message"]  # newest first
    purchase = doc["interactions"][1]
    assert purchase["amount"] == 1280 and purchase["currency"] == "TWD"
    assert purchase["at"] == "2026-10-05T12:30:00+08:00"
    assert doc["score"] > 0 and set(doc["score_breakdown"]) == {"message", "purchase", "checkin"}


def test_fans_lists_everyone_by_score_and_json_has_no_interactions(cli):
    cli("import", str(EXAMPLE))
    fans = json.loads(cli("fans", "--json").stdout)
    assert len(fans) == 5
    assert [f["score"] for f in fans] == sorted((f["score"] for f in fans), reverse=True)
    assert all("interactions" not in f for f in fans)
    top = json.loads(cli("fans", "--json", "--top", "2").stdout)
    assert [f["id"] for f in top] == [f["id"] for f in fans[:2]]
    assert "小慧" in cli("fans").stdout


def test_reimport_is_idempotent(cli):
    cli("import", str(EXAMPLE))
    again = cli("import", str(EXAMPLE))
    assert "9" in again.stdout  # nine duplicates skipped
    assert len(json.loads(cli("fans", "--json").stdout)) == 5


def test_bad_row_rejects_the_whole_file(cli, tmp_path):
    bad = tmp_path / "bad.csv"
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    lines.insert(4, "line,Uxyz,壞資料,purchase,yesterday,100,TWD,bad-1,")
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = cli("import", str(bad), expect=2)
    assert result.stderr == (f"錯誤：{bad}:5：occurred_at「yesterday」不是含時區的 ISO-8601 時間"
                             "（例如 2026-11-22T20:15:00+08:00）。\n")
    assert json.loads(cli("fans", "--json").stdout) == []  # nothing from that file committed


def test_the_fan_card_reads_in_the_creators_language(cli, tmp_path):
    cli("import", str(EXAMPLE))
    card = cli("fan", "line:U4af4980629f1e0b7c1a2b3c4d5e6f701").stdout
    lines = card.splitlines()
    assert any(line.split() == ["類型", "┃", "次數", "┃", "原始得分", "┃", "目前分數"] for line in lines), card
    assert any(line.split()[:1] == ["購買"] for line in lines) and "帳號：line:U4af4980629f1e0b7c1a2b3c4d5e6f701" in card
    assert any(line.split()[2:5] == ["LINE", "│", "打卡"] for line in lines), card  # the newest interaction
    for english in ("kind", "count", "points", "today", "platform", "summary", "purchase", "checkin"):
        assert english not in card.split(), english
    english = tmp_path / "en.toml"
    english.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path / "main.db"}"\n[creator]\nlocale = "en"\n',
                       encoding="utf-8")
    en = CliRunner().invoke(app, ["--config", str(english), "fan", "line:U4af4980629f1e0b7c1a2b3c4d5e6f701"]).stdout
    assert "Worth today" in en and "Accounts: line:" in en
    assert any(line.split()[:3] == ["purchase", "│", "1"] for line in en.splitlines()), en


def test_fuzzy_and_ambiguous_lookups(cli, tmp_path):
    cli("import", str(EXAMPLE))
    assert json.loads(cli("fan", "XIAO", "--json").stdout)["display_name"] == "ｘｉａｏ"
    missing = cli("fan", "nobody-at-all", expect=2)
    assert "nobody-at-all" in missing.stderr


def test_crm_errors_are_shown_in_the_creators_language(cli, tmp_path):
    cli("import", str(EXAMPLE))
    zh = cli("pin", "小慧", "king", expect=2)
    assert zh.stderr == "錯誤：沒有「king」這個等級；可用的等級：路人、粉絲、鐵粉、摯友。\n"
    assert cli("fan", "nobody-at-all", expect=2).stderr == "錯誤：找不到符合「nobody-at-all」的粉絲。\n"
    assert cli("pin", "小慧", expect=2).stderr == "錯誤：請指定要設定的等級，或加上 --unpin 取消設定。\n"
    english = tmp_path / "en.toml"
    english.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path / "main.db"}"\n[creator]\nlocale = "en"\n',
                       encoding="utf-8")
    en = CliRunner().invoke(app, ["--config", str(english), "pin", "小慧", "king"])
    assert en.exit_code == 2
    assert en.stderr == "Error: Unknown tier “king”; the tiers are: Passer-by, Fan, True fan, Close friend.\n"
    en = CliRunner().invoke(app, ["--config", str(english), "fan", "nobody-at-all"])
    assert (en.exit_code, en.stderr) == (2, "Error: No fan matches “nobody-at-all”.\n")


def test_export_csv_round_trip_into_an_empty_database(cli, tmp_path):
    cli("import", str(EXAMPLE))
    exported = tmp_path / "export.csv"
    cli("export", "--format", "csv", "--out", str(exported))
    raw = exported.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # Excel opens UTF-8 with a BOM, CJK intact
    assert "小慧" in raw.decode("utf-8-sig")
    cli("import", str(exported), db="copy.db")
    original = json.loads(cli("fans", "--json").stdout)
    copy = json.loads(cli("fans", "--json", db="copy.db").stdout)

    def shape(fans):
        return sorted((f["display_name"], f["tier"], f["score"], tuple(sorted(
            (i["platform"], i["external_id"]) for i in f["identities"]))) for f in fans)

    assert shape(copy) == shape(original)
    for fan in original:
        a = json.loads(cli("fan", str(fan["id"]), "--json").stdout)["interactions"]
        name = fan["identities"][0]
        b = json.loads(cli("fan", f"{name['platform']}:{name['external_id']}", "--json", db="copy.db").stdout)
        assert [(i["kind"], i["at"], i["amount"]) for i in a] == [(i["kind"], i["at"], i["amount"])
                                                                   for i in b["interactions"]]


def test_merge_then_export_keeps_people_merged(cli, tmp_path):
    cli("import", str(EXAMPLE))
    cli("merge", "line:U4af4980629f1e0b7c1a2b3c4d5e6f701", "discord:498765432109876543")
    exported = tmp_path / "merged.jsonl"
    cli("export", "--format", "jsonl", "--out", str(exported))
    cli("import", str(exported), db="copy.db")
    fan = json.loads(cli("fan", "discord:498765432109876543", "--json", db="copy.db").stdout)
    assert {i["platform"] for i in fan["identities"]} == {"line", "discord"}


def test_export_json_has_full_records(cli, tmp_path, monkeypatch):
    cli("import", str(EXAMPLE))
    out = tmp_path / "all.json"
    cli("export", "--format", "json", "--out", str(out))
    text = out.read_text(encoding="utf-8")
    data = json.loads(text)
    assert len(data["fans"]) == 5 and sum(len(f["interactions"]) for f in data["fans"]) == 9
    # written a fan at a time, it reads as one document indented by two, CJK as it is
    assert text == json.dumps(data, ensure_ascii=False, indent=2) + "\n"
    # built and written a few fans at a time: the same document, best fans first
    monkeypatch.setattr("bot.exporter.FANS_PER_CHUNK", 2)
    chunked = tmp_path / "chunked.json"
    cli("export", "--format", "json", "--out", str(chunked))
    again = json.loads(chunked.read_text(encoding="utf-8"))
    assert [f["id"] for f in again["fans"]] == [f["id"] for f in data["fans"]]
    assert [f["interactions"] for f in again["fans"]] == [f["interactions"] for f in data["fans"]]
    assert [f["score"] for f in again["fans"]] == sorted((f["score"] for f in again["fans"]), reverse=True)
    empty = tmp_path / "none.json"
    cli("export", "--format", "json", "--out", str(empty), db="empty.db")
    assert json.loads(empty.read_text(encoding="utf-8"))["fans"] == []


def test_config_errors_are_reported_one_per_line(tmp_path, monkeypatch):
    monkeypatch.delenv("LINE_CHANNEL_SECRET", raising=False)
    monkeypatch.delenv("LINE_CHANNEL_ACCESS_TOKEN", raising=False)
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[database]\nurl = 5\ncolour = "red"\n[line]\nenabled = true\n[creator]\ntimezone = "Mars/Base"\n',
                   encoding="utf-8")
    result = CliRunner().invoke(app, ["--config", str(cfg), "run"])  # run needs the LINE secrets
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [  # in zh-TW: the file names no locale
        f"錯誤：{cfg}：database.url 必須是文字（加上引號），不能是 5",
        f"錯誤：{cfg}：沒有 database.colour 這個設定項（這個區段可用的有：url、auto_migrate、busy_timeout_seconds）",
        f'錯誤：{cfg}：creator.timezone 的 "Mars/Base" 不是已知的時區（例如 "Asia/Taipei"）',
        f"錯誤：{cfg}：已啟用 LINE，但沒有設定環境變數 LINE_CHANNEL_SECRET",
        f"錯誤：{cfg}：已啟用 LINE，但沒有設定環境變數 LINE_CHANNEL_ACCESS_TOKEN",
    ]
    offline = CliRunner().invoke(app, ["--config", str(cfg), "fans"])
    assert offline.exit_code == 2  # the file's own mistakes still stop every command …
    assert "Mars/Base" in offline.stderr and "LINE_CHANNEL_SECRET" not in offline.stderr  # … secrets do not


def _platforms_enabled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A valid config with LINE and Discord switched on, on a machine without their secrets."""
    for env in ("LINE_CHANNEL_SECRET", "LINE_CHANNEL_ACCESS_TOKEN", "DISCORD_TOKEN", "SUPERFAN_CONFIG"):
        monkeypatch.delenv(env, raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "platforms.toml"
    cfg.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path / "p.db"}"\n'
                   '[line]\nenabled = true\n[discord]\nenabled = true\n[web]\nport = 0\n', encoding="utf-8")
    return cfg


def test_offline_commands_work_without_platform_secrets(tmp_path, monkeypatch):
    cfg = _platforms_enabled(tmp_path, monkeypatch)

    def ok(*args: str):
        result = CliRunner().invoke(app, ["--config", str(cfg), *args])
        assert result.exit_code == 0, (args, result.stdout, result.stderr)
        return result

    ok("migrate")
    assert json.loads(ok("fans", "--json").stdout) == []
    ok("import", str(EXAMPLE))
    assert len(json.loads(ok("fans", "--json").stdout)) == 5
    assert json.loads(ok("fan", "小慧", "--json").stdout)["display_name"] == "小慧"
    ok("stats", "--json")
    ok("pin", "小慧", "摯友")
    ok("rescore")
    ok("merge", "line:U4af4980629f1e0b7c1a2b3c4d5e6f701", "discord:498765432109876543")
    ok("export", "--out", str(tmp_path / "out.csv"))
    ok("link-code", "discord:123456789012345678")  # issues a code in the database; LINE is not called


def test_run_refuses_to_start_without_the_secrets_it_needs(tmp_path, monkeypatch):
    cfg = _platforms_enabled(tmp_path, monkeypatch)
    result = CliRunner().invoke(app, ["--config", str(cfg), "run"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"錯誤：{cfg}：已啟用 LINE，但沒有設定環境變數 LINE_CHANNEL_SECRET",
        f"錯誤：{cfg}：已啟用 LINE，但沒有設定環境變數 LINE_CHANNEL_ACCESS_TOKEN",
        f"錯誤：{cfg}：已啟用 Discord，但沒有設定環境變數 DISCORD_TOKEN",
    ]
    assert not (tmp_path / "p.db").exists()  # refused before touching the database


def test_missing_config_file_and_bad_toml(tmp_path):
    result = CliRunner().invoke(app, ["--config", str(tmp_path / "nope.toml"), "fans"])
    assert (result.exit_code, result.stderr) == (2, f"錯誤：{tmp_path / 'nope.toml'}：找不到設定檔\n")
    broken = tmp_path / "broken.toml"
    broken.write_text("[database\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["--config", str(broken), "fans"])
    assert (result.exit_code, result.stderr) == (2, f"錯誤：{broken}：不是有效的 TOML：第 1 行第 10 欄寫法有誤\n")


def test_csv_export_columns_are_the_import_format(cli, tmp_path):
    cli("import", str(EXAMPLE))
    out = tmp_path / "e.csv"
    cli("export", "--out", str(out))
    with out.open(encoding="utf-8-sig") as fh:
        header = next(csv.reader(fh))
    assert header[1:] == ["platform", "external_id", "display_name", "kind", "occurred_at", "amount", "currency",
                          "event_id", "text"]


def test_shipped_example_finds_its_true_fans(cli):
    """The README's first command: the 90-day example's eight committed fans are the 鐵粉, nobody else."""
    example = EXAMPLE.parent / "community-90-days.csv"
    cli("import", str(example))
    top = json.loads(cli("fans", "--min-tier", "鐵粉", "--json", "--now", "2026-11-21T09:00:00+08:00").stdout)
    assert len(top) == 8 and all(f["tier"] == "鐵粉" for f in top)
    assert all({"purchase", "checkin"} <= set(f["score_breakdown"]) for f in top)


def test_forget_erases_a_fan_after_confirmation(cli, tmp_path):
    cli("import", str(EXAMPLE))
    kept = cli("forget", "小慧", expect=1)  # answered "no" (no input): nothing erased
    assert "小慧" in kept.stderr and "error" not in kept.stderr
    assert len(json.loads(cli("fans", "--json").stdout)) == 5
    cli("forget", "小慧", "--yes")
    fans = json.loads(cli("fans", "--json").stdout)
    assert len(fans) == 4 and "小慧" not in {f["display_name"] for f in fans}
    cli("fan", "line:U4af4980629f1e0b7c1a2b3c4d5e6f701", expect=2)
    exported = tmp_path / "after.csv"
    cli("export", "--out", str(exported))
    assert "U4af4980629f1e0b7c1a2b3c4d5e6f701" not in exported.read_text(encoding="utf-8-sig")


def test_forget_keeps_a_fan_who_opted_out_unrecorded(cli, tmp_path):
    cli("import", str(EXAMPLE))
    with closing(sqlite3.connect(tmp_path / "main.db")) as db, db:
        db.execute("UPDATE fans SET opted_out = 1 WHERE display_name = '小慧'")
    done = cli("forget", "小慧", "--yes")
    assert "不記錄" in done.stdout
    doc = json.loads(cli("fan", "line:U4af4980629f1e0b7c1a2b3c4d5e6f701", "--json").stdout)
    assert doc["display_name"] == "line:e6f701" and doc["interactions"] == [] and doc["notes"] == []
