import csv
import json
import re
from collections import Counter
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.demo import community

ARCHETYPES, FIELDS, KINDS = community.ARCHETYPES, community.FIELDS, community.KINDS
Community, Mix, simulate, true_fan_keys = (
    community.Community,
    community.Mix,
    community.simulate,
    community.true_fan_keys,
)
message_count_ranking, precision_recall = community.message_count_ranking, community.precision_recall
write_csv, write_jsonl = community.write_csv, community.write_jsonl


SMALL = Mix(
    true_fans=8,
    casual=30,
    lurkers=30,
    spammers=3,
    one_time_buyers=8,
    occasional_buyers=5,
    event_goers=5,
    lapsed_true_fans=4,
)
DISCORD_ID = re.compile(r"[1-9]\d{17}")
LINE_ID = re.compile(r"U[0-9a-f]{32}")


@pytest.fixture(scope="module")
def default() -> Community:
    return simulate(seed=1)


def key(row: dict) -> str:
    return f"{row['platform']}:{row['external_id']}"


def test_deterministic_for_a_seed():
    a, b = simulate(seed=7, days=60, mix=SMALL), simulate(seed=7, days=60, mix=SMALL)
    assert a == b
    assert a.rows


def test_different_seeds_differ():
    a, b = simulate(seed=1, days=60, mix=SMALL), simulate(seed=2, days=60, mix=SMALL)
    assert a.rows != b.rows
    assert set(a.truth) != set(b.truth)


def test_default_size_and_window(default):
    assert 100_000 <= len(default.rows) <= 400_000
    assert default.end - default.start == timedelta(days=180)
    assert default.end.utcoffset() == timedelta(hours=8)


def test_rows_have_documented_format(default):
    for r in default.rows:
        assert tuple(r) == FIELDS
        assert r["kind"] in KINDS
        if r["platform"] == "discord":
            assert DISCORD_ID.fullmatch(r["external_id"])
        else:
            assert r["platform"] == "line" and LINE_ID.fullmatch(r["external_id"])
        assert r["display_name"]
        assert r["occurred_at"].endswith("+08:00")
        assert default.start <= datetime.fromisoformat(r["occurred_at"]) <= default.end
        if r["kind"] == "purchase":
            assert r["amount"].isdigit() and 300 <= int(r["amount"]) <= 8000 and r["currency"] == "TWD"
        else:
            assert r["amount"] == "" and r["currency"] == ""
        if r["kind"] in ("message", "dm_in"):
            assert r["text"]
        else:
            assert r["text"] == ""


def test_rows_sorted_and_event_ids_unique(default):
    times = [datetime.fromisoformat(r["occurred_at"]) for r in default.rows]
    assert times == sorted(times)
    ids = [r["event_id"] for r in default.rows]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith("sim-1-") for i in ids)


def test_truth_covers_every_account(default):
    keys = {key(r) for r in default.rows}
    assert keys == set(default.truth)
    assert set(default.truth.values()) == {a for a, n in Mix().counts().items() if n}
    assert true_fan_keys(default) == {k for k, a in default.truth.items() if a == "true_fan"}
    assert len(true_fan_keys(default)) == Mix().true_fans
    names = Counter(n for n in {(key(r), r["display_name"]) for r in default.rows})
    assert len({n for _, n in names}) < len(keys)  # display names repeat across fans


def test_spammers_message_far_more_than_true_fans(default):
    msgs = Counter(key(r) for r in default.rows if r["kind"] == "message")
    other = Counter(key(r) for r in default.rows if r["kind"] != "message")
    spam = [k for k, a in default.truth.items() if a == "spammer"]
    fans = true_fan_keys(default)
    spam_mean = sum(msgs[k] for k in spam) / len(spam)
    fan_mean = sum(msgs[k] for k in fans) / len(fans)
    assert spam_mean > 10 * fan_mean
    assert sum(other[k] for k in spam) <= len(spam)  # nothing else but the odd reaction


def test_true_fans_buy_check_in_and_stay_active(default):
    fans = true_fan_keys(default)
    by_fan: dict[str, Counter] = {k: Counter() for k in fans}
    last_seen = {}
    for r in default.rows:
        if r["platform"] + ":" + r["external_id"] in by_fan:
            by_fan[key(r)][r["kind"]] += 1
            last_seen[key(r)] = datetime.fromisoformat(r["occurred_at"])
    assert sum(c["purchase"] >= 3 for c in by_fan.values()) >= 0.9 * len(fans)
    assert sum(c["checkin"] >= 5 for c in by_fan.values()) >= 0.9 * len(fans)
    assert sum(c["event_checkin"] >= 1 for c in by_fan.values()) >= 0.5 * len(fans)
    assert all(t > default.end - timedelta(days=30) for t in last_seen.values())


def test_lapsed_true_fans_stopped(default):
    cutoff = default.end - timedelta(days=100)
    for r in default.rows:
        if default.truth[key(r)] == "lapsed_true_fan" and datetime.fromisoformat(r["occurred_at"]) > cutoff:
            assert r["kind"] == "reaction"


def test_meetups_and_event_checkins(default):
    assert 3 <= len(default.meetups) <= 5
    assert len({m["code"] for m in default.meetups}) == len(default.meetups)
    days = {m["starts_at"][:10] for m in default.meetups}
    checkins = [r for r in default.rows if r["kind"] == "event_checkin"]
    assert checkins and all(r["occurred_at"][:10] in days for r in checkins)


def test_mee6_ranking_is_fooled_by_spammers(default):
    truth = true_fan_keys(default)
    ranking = message_count_ranking(default.rows)
    top = {k for k, _ in ranking[: len(truth)]}
    precision, recall = precision_recall(top, truth)
    print(f"MEE6 top-{len(truth)} precision={precision:.3f} recall={recall:.3f}")
    assert precision < 0.7, precision
    spam = {k for k, a in default.truth.items() if a == "spammer"}
    assert len(spam & {k for k, _ in ranking[:20]}) >= 5


def test_message_count_ranking_cooldown():
    t0 = datetime(2025, 1, 1, 12, tzinfo=ZoneInfo("Asia/Taipei"))

    def msg(ext: str, s: int, kind: str = "message") -> dict:
        return {
            "platform": "discord",
            "external_id": ext,
            "kind": kind,
            "occurred_at": (t0 + timedelta(seconds=s)).isoformat(),
        }

    rows = [msg("1", s) for s in (0, 5, 59, 60, 61, 130)] + [msg("2", s) for s in (0, 61, 122, 183)]
    rows += [msg("3", 0, "reaction"), msg("2", 500, "dm_in")]
    assert message_count_ranking(rows) == [("discord:2", 4), ("discord:1", 3)]
    assert message_count_ranking(rows, cooldown_s=0) == [("discord:1", 6), ("discord:2", 4)]


@given(st.lists(st.integers(0, 10_000), max_size=40), st.integers(0, 600))
def test_cooldown_never_counts_more_than_raw(offsets, cooldown):
    t0 = datetime(2025, 1, 1, tzinfo=ZoneInfo("Asia/Taipei"))
    rows = [
        {
            "platform": "line",
            "external_id": "U" + "0" * 32,
            "kind": "message",
            "occurred_at": (t0 + timedelta(seconds=s)).isoformat(),
        }
        for s in offsets
    ]
    ranking = message_count_ranking(rows, cooldown_s=cooldown)
    counted = ranking[0][1] if ranking else 0
    assert counted <= len(offsets)
    if offsets:
        assert counted >= 1 and counted >= (max(offsets) - min(offsets)) // (cooldown + 10_001) + 1


def test_precision_recall():
    assert precision_recall({"a", "b"}, {"b", "c", "d", "e"}) == (0.5, 0.25)
    assert precision_recall(set(), {"a"}) == (0.0, 0.0)
    assert precision_recall({"a"}, set()) == (0.0, 0.0)


def test_writers_round_trip(tmp_path):
    c = simulate(seed=3, days=30, mix=SMALL)
    write_jsonl(c.rows, tmp_path / "rows.jsonl")
    write_csv(c.rows, tmp_path / "rows.csv")
    lines = (tmp_path / "rows.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(x) for x in lines] == c.rows
    with open(tmp_path / "rows.csv", encoding="utf-8", newline="") as fh:
        assert list(csv.DictReader(fh)) == c.rows


def test_end_and_timezone_handling():
    naive = simulate(seed=5, days=20, mix=SMALL, end=datetime(2024, 3, 1, 18, 30))
    assert naive.end == datetime(2024, 3, 1, 18, 30, tzinfo=ZoneInfo("Asia/Taipei"))
    assert all(naive.start <= datetime.fromisoformat(r["occurred_at"]) <= naive.end for r in naive.rows)
    tokyo = simulate(seed=5, days=20, mix=SMALL, tz="Asia/Tokyo")
    assert all(r["occurred_at"].endswith("+09:00") for r in tokyo.rows)
    with pytest.raises(ValueError):
        simulate(mix=Mix(spammers=-1))


def test_named_mixes_differ_the_way_issue_18_asks():
    """Steady true fans join 3-12 months ago ("recent": mostly 3-4), commit steadily; chatters talk a lot."""
    mix, days = community.MIXES["recent"]
    small = community.Mix(**{**vars(mix), "true_fans": 20, "casual": 10, "lurkers": 10, "heavy_chatters": 10})
    c = simulate(seed=4, days=days, mix=small)
    first: dict[str, datetime] = {}
    kinds: dict[str, Counter] = {}
    for r in c.rows:
        first.setdefault(key(r), datetime.fromisoformat(r["occurred_at"]))
        kinds.setdefault(key(r), Counter())[r["kind"]] += 1
    joined = [(c.end - first[k]).days for k in true_fan_keys(c)]
    assert all(joined_days <= 366 for joined_days in joined)
    assert sum(90 <= d <= 121 for d in joined) >= 0.6 * len(joined)
    assert all(kinds[k]["purchase"] >= 1 and kinds[k]["checkin"] >= 5 for k in true_fan_keys(c))
    chatters = [k for k, a in c.truth.items() if a == "heavy_chatter"]
    fan_msgs = sum(kinds[k]["message"] for k in true_fan_keys(c)) / len(true_fan_keys(c))
    assert sum(kinds[k]["message"] for k in chatters) / len(chatters) > 3 * fan_msgs
    assert all(kinds[k]["checkin"] + kinds[k]["purchase"] <= 20 for k in chatters)
