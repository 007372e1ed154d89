"""The creator-scale suite (issue #19): one table, every figure next to its reference and target.

    python -m benchmarks [--small] [--rebuild] [--only ROW,ROW] [--skip-others] [--save PATH]

On the generated creator-scale database (``benchmarks/scale_db.py``: 100,000 fans, 10M
interactions, 5,000 open conversations; ``--small`` for a quick run) each row is measured from
outside, in a process of its own: timings inside the probe process (``benchmarks/scale_probes.py``)
or of a whole ``superfan`` command, peak RSS from ``os.wait4`` of that process. The raw stdlib
sqlite3 reference of a row runs in the same suite run. ``import`` and ``rescore`` are their own
benches (``benchmarks/bench_import.py``, ``benchmarks/bench_rescore.py``): the suite runs them and
shows their figures (``--skip-others`` leaves them out). ``drop`` runs ``benchmarks/bench_drop.py
--no-discord`` (10,000 LINE fans on a database of its own); ``report`` the whole ``superfan report``.

Nothing here asserts: a missed target is a row marked MISSED.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.scale_db import FULL, NOW, SMALL, ensure_db
from benchmarks.scale_probes import sample_fans, superfan_command, write_config

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


@dataclass
class Row:
    what: str
    figure: str
    reference: str
    target: str
    ok: bool | None  # None: no target, or not measured
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    seconds: float
    rss_mb: float
    code: int
    stdout: str
    stderr: str
    cpu_s: float = 0.0  # user + sys of that process


def spawn(cmd: list[str], *, stdout_path: Path | None = None, env: dict[str, str] | None = None,
          timeout: float = 3600.0) -> Run:
    """Run ``cmd`` to its end; wall time and the peak RSS of that process alone (``wait4``)."""
    sink = stdout_path.open("wb") if stdout_path else subprocess.PIPE
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=err, env=env, cwd=REPO)
        out = b""
        if stdout_path is None:
            assert proc.stdout is not None
            out = proc.stdout.read()
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
            time.sleep(0.01)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        errors = err.read().decode(errors="replace")
    if stdout_path:
        sink.close()  # type: ignore[union-attr]
    return Run(seconds, usage.ru_maxrss / 1024, proc.returncode, out.decode(errors="replace"), errors,
               usage.ru_utime + usage.ru_stime)


def probe(name: str, db: Path, *args: str) -> tuple[dict[str, Any], Run]:
    run = spawn([sys.executable, "-m", "benchmarks.scale_probes", name, str(db), *args])
    if run.code != 0:
        raise RuntimeError(f"probe {name} failed ({run.code}): {run.stderr.strip()[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1]), run


def ms(p: dict[str, Any]) -> str:
    return f"{p['p50']:.2f} / {p['p99']:.2f} ms"


def card_rows(db: Path) -> list[Row]:
    rows = []
    for how, what, limit in (("id", "fan card by platform:id (crm) p50 / p99", 5.0),
                             ("name", "fan card by name (crm) p50 / p99", 5.0),
                             ("fuzzy", "fan card by a mistyped name (fuzzy) p50 / p99", 50.0)):
        found, _ = probe("card", db, how)
        ref, _ = probe("ref_card", db, "name" if how != "id" else "id")
        outcome = f" [{found['found']} found, {found['ambiguous']} ambiguous, {found['not_found']} not found]"
        rows.append(Row(what, ms(found) + outcome, "raw " + ms(ref), f"p99 ≤ {limit:g} ms", found["p99"] <= limit,
                        {"crm": found, "reference": ref}))
    return rows


def top_row(db: Path) -> Row:
    found, _ = probe("top", db)
    ref, _ = probe("ref_top", db)
    return Row("fans --top 100 (crm ranked_fans + fan_documents) p50 / max", ms(found),
               f"raw ranking {ms(ref)}; + GROUP BY of their {ref['awarded_rows']:,} awarded rows {ms(ref['grouped'])}",
               "≤ 50 ms", found["p50"] <= 50.0, {"crm": found, "reference": ref})


def json_row(config: Path) -> Row:
    run = spawn([superfan_command(), "--config", str(config), "fans", "--json"], stdout_path=Path(os.devnull))
    ok = run.code == 0 and run.rss_mb <= 200
    return Row("fans --json (every fan)", f"{run.seconds:.1f} s, {run.rss_mb:.0f} MB" + _failed(run), "",
               "streamed, ≤ 200 MB", ok, {"seconds": run.seconds, "rss_mb": run.rss_mb, "code": run.code})


def export_row(db: Path, config: Path, folder: Path) -> Row:
    out, ref_out = folder / "export.csv", folder / "reference.csv"
    run = spawn([superfan_command(), "--config", str(config), "export", "--format", "csv", "--out", str(out)])
    ref, ref_run = probe("ref_export", db, str(ref_out))
    lines = sum(1 for _ in out.open("rb")) if out.exists() else 0
    ratio = run.seconds / ref["seconds"]
    ok = run.code == 0 and ratio <= 1.5 and run.rss_mb <= 200
    for path in (out, ref_out):
        path.unlink(missing_ok=True)
    return Row("export --format csv", f"{run.seconds:.1f} s, {run.rss_mb:.0f} MB, {lines - 1:,} rows, "
               f"{ratio:.2f}× reference" + _failed(run),
               f"join + csv {ref['seconds']:.1f} s, {ref_run.rss_mb:.0f} MB", "≤ 1.5× reference, ≤ 200 MB", ok,
               {"seconds": run.seconds, "rss_mb": run.rss_mb, "reference_s": ref["seconds"],
                "reference_rss_mb": ref_run.rss_mb, "rows": lines - 1})


def startup_row(db: Path, config: Path) -> Row:
    light = next(f for f in sample_fans(db, 40)[1:] if f[0] > 300)
    query = f"{light[1]}:{light[2]}"
    fan_times, pass_times = [], []
    for _ in range(5):
        run = spawn([superfan_command(), "--config", str(config), "fan", query], stdout_path=Path(os.devnull))
        fan_times.append(run.seconds)
        pass_times.append(spawn([sys.executable, "-c", "pass"]).seconds)
    median = statistics.median(fan_times)
    return Row("CLI start-up (superfan fan of a light fan) median of 5", f"{median:.2f} s" + _failed(run),
               f"python -c pass {statistics.median(pass_times):.2f} s", "≤ 0.3 s", median <= 0.3,
               {"fan_s": fan_times, "pass_s": pass_times})


STATS_MS, STATS_PYTHON_MB = 250.0, 16.0  # 100k FanPoints alone held ~60 MB


def stats_row(db: Path) -> Row:
    """``/stats``'s whole work as the Discord cog does it (community figures + calibration view)."""
    found, run = probe("stats", db)
    load = os.getloadavg()[0]
    ok = found["p50"] <= STATS_MS and found["python_peak_mb"] <= STATS_PYTHON_MB
    return Row("/stats (cog's work: community_stats + calibration view) p50 / p99",
               f"{ms(found)}, CPU p50 {found['cpu_p50']:.0f} ms; Python peak {found['python_peak_mb']:.1f} MB,"
               f" probe RSS {run.rss_mb:.0f} MB; load {load:.1f}", "",
               f"p50 ≤ {STATS_MS:g} ms, Python peak ≤ {STATS_PYTHON_MB:g} MB (no per-fan objects for every fan)",
               ok, {"crm": found, "rss_mb": run.rss_mb, "load": load})


def tiers_rows(config: Path, repeat: int = 3) -> list[Row]:
    """``superfan tiers`` and ``superfan tiers --try 鐵粉=50`` (the whole command, median of ``repeat``)."""
    rows = []
    when = ["--now", NOW.isoformat()]
    for what, args in (("superfan tiers (CLI, whole command)", ["tiers", *when]),
                       ("superfan tiers --try 鐵粉=50 (who would move)", ["tiers", "--try", "鐵粉=50", *when])):
        runs = [spawn([superfan_command(), "--config", str(config), *args], stdout_path=Path(os.devnull))
                for _ in range(repeat)]
        wall, cpu = statistics.median(r.seconds for r in runs), statistics.median(r.cpu_s for r in runs)
        rss, load = max(r.rss_mb for r in runs), os.getloadavg()[0]
        ok = all(r.code == 0 for r in runs) and wall <= 1.0 and rss <= 200
        rows.append(Row(f"{what} median of {repeat}",
                        f"{wall:.2f} s (CPU {cpu:.2f} s), {rss:.0f} MB; load {load:.1f}" + _failed(runs[-1]), "",
                        "≤ 1 s, ≤ 200 MB", ok, {"seconds": [r.seconds for r in runs], "cpu_s": [r.cpu_s for r in runs],
                                               "rss_mb": rss, "load": load}))
    return rows


def run_row(db: Path) -> Row:
    found, _ = probe("run", db)
    ok = found["rss_mb"] <= 200 and found["statuses"] == {"200": found["requests"]}
    return Row("superfan run RSS holding the database, serving lookups",
               f"{found['rss_mb']:.0f} MB ({found['requests']} webhooks {found['statuses']}, "
               f"{found['replies']} 我的資料 replies)", "", "≤ 200 MB", ok, found)


def digest_row(db: Path) -> Row:
    found, _ = probe("digest", db)
    return Row("digest (build_digest) median", f"{found['p50']:.0f} ms ({found['unanswered']} unanswered)", "",
               "≤ 250 ms", found["p50"] <= 250.0, {"crm": found})


REPORT_S, REPORT_MB = 2.0, 200.0


def report_row(config: Path, folder: Path, repeat: int = 3) -> Row:
    """``superfan report`` (the whole command, HTML written) as at the suite's NOW, median of ``repeat``."""
    out = folder / "r.html"
    runs = [spawn([superfan_command(), "--config", str(config), "report", "--now", NOW.isoformat(),
                   "--out", str(out)]) for _ in range(repeat)]
    size = out.stat().st_size if out.exists() else 0
    out.unlink(missing_ok=True)
    wall, cpu = statistics.median(r.seconds for r in runs), statistics.median(r.cpu_s for r in runs)
    rss = max(r.rss_mb for r in runs)
    ok = all(r.code == 0 for r in runs) and size > 0 and wall <= REPORT_S and rss <= REPORT_MB
    return Row(f"superfan report (CLI, whole command, HTML written) median of {repeat}",
               f"{wall:.2f} s (CPU {cpu:.2f} s), {rss:.0f} MB, {size / 1024:.0f} KiB of HTML" + _failed(runs[-1]), "",
               f"≤ {REPORT_S:g} s, ≤ {REPORT_MB:g} MB", ok,
               {"seconds": [r.seconds for r in runs], "cpu_s": [r.cpu_s for r in runs], "rss_mb": rss,
                "html_bytes": size})


def drop_row() -> Row:
    """A drop to 10,000 LINE fans, create → all sent (bench_drop.py builds its own database)."""
    row = other_bench_row("drop to 10,000 LINE fans, create → all sent (bench_drop.py --no-discord)", "bench_drop",
                          ["--no-discord"])
    if row.raw:
        shown = row.figure
        row.target = "≤ 2 s, exactly 20 multicasts, each fan once"
        row.ok = row.raw["code"] == 0 and "MISSED" not in shown and "FAIL" not in shown and shown.count("OK") >= 3
    return row


def other_bench_row(what: str, script: str, args: list[str]) -> Row:
    """A bench another engineer owns: run it, show the lines that carry its figures."""
    if not (HERE / f"{script}.py").exists():
        return Row(what, "not yet built", "", "", None)
    run = spawn([sys.executable, "-m", f"benchmarks.{script}", *args], timeout=1800)
    lines = [line.strip() for line in run.stdout.splitlines() if line.strip()]
    shown = [line for line in lines if any(w in line for w in ("target", "OK", "MISSED", "ratio", "RSS", "MB"))]
    text = " | ".join(shown or lines[-3:]) + _failed(run)
    return Row(what, text, f"(its own: {script}.py)", "(its own)", None,
               {"stdout": run.stdout[-4000:], "rss_mb": run.rss_mb, "seconds": run.seconds, "code": run.code})


def _failed(run: Run) -> str:
    return "" if run.code == 0 else f" FAILED (exit {run.code}: {run.stderr.strip().splitlines()[-1:]})"


def render(rows: list[Row], title: str) -> str:
    verdict = {True: "OK", False: "MISSED", None: ""}
    table = [("what", "superfan", "reference", "target", "")] + [
        (r.what, r.figure, r.reference, r.target, verdict[r.ok]) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(4)]
    out = [title, ""]
    for n, line in enumerate(table):
        out.append(" | ".join(cell.ljust(widths[i]) if i < 4 else cell for i, cell in enumerate(line)))
        if n == 0:
            out.append("-+-".join("-" * w for w in widths) + "-+-------")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="5,000 fans and 200k interactions (quick)")
    parser.add_argument("--rebuild", action="store_true", help="generate the database again")
    parser.add_argument("--only", help="comma-separated rows: card,top,json,export,startup,run,digest,stats,"
                                       "tiers,import,rescore")
    parser.add_argument("--skip-others", action="store_true", help="leave out bench_import and bench_rescore")
    parser.add_argument("--save", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    scale = SMALL if args.small else FULL
    db = ensure_db(scale, rebuild=args.rebuild)
    folder = Path(tempfile.mkdtemp(prefix="superfan-suite-"))
    config = write_config(folder, db)
    import_rows = 3_000_000 if scale is FULL else scale.interactions  # the import: 3M rows
    steps: dict[str, Callable[[], list[Row]]] = {
        "card": lambda: card_rows(db),
        "top": lambda: [top_row(db)],
        "json": lambda: [json_row(config)],
        "export": lambda: [export_row(db, config, folder)],
        "startup": lambda: [startup_row(db, config)],
        "run": lambda: [run_row(db)],
        "digest": lambda: [digest_row(db)],
        "stats": lambda: [stats_row(db)],
        "tiers": lambda: tiers_rows(config),
        "report": lambda: [report_row(config, folder)],
        "drop": lambda: [drop_row()],
        "import": lambda: [other_bench_row(f"import of {import_rows:,} rows (bench_import.py)", "bench_import",
                                           ["--rows", str(import_rows), "--fans", str(scale.fans), "--repeat", "1"])],
        "rescore": lambda: [other_bench_row("rescore of this database (bench_rescore.py)", "bench_rescore",
                                            ["--db", str(db)])],
    }
    wanted = args.only.split(",") if args.only else list(steps)
    if args.skip_others:
        wanted = [w for w in wanted if w not in ("import", "rescore")]
    rows: list[Row] = []
    try:
        for name in wanted:
            t0 = time.perf_counter()
            try:
                rows.extend(steps[name]())
            except Exception as exc:  # one broken row must not hide the others
                rows.append(Row(name, f"ERROR: {str(exc).strip().splitlines()[-1][-300:]}", "", "", False))
            print(f"  {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    title = (f"creator-scale suite: {scale.fans:,} fans, {scale.interactions:,} interactions, "
             f"{scale.open_conversations:,} open conversations ({db})")
    print(render(rows, title))
    if args.save:
        args.save.write_text(json.dumps([r.__dict__ for r in rows], ensure_ascii=False, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
