"""The benchmark's pure parts: wrk parsing, percentiles, ratios, targets, the table."""

import copy

import pytest

from bench.report import (
    BACKLOG_ROWS,
    ROWS,
    Target,
    backlog_ratios,
    backlog_rows,
    evaluate_targets,
    format_table,
    format_value,
    histogram_percentile,
    lookup,
    mark,
    merge_backlog_rounds,
    merge_runs,
    parse_histogram,
    parse_wrk,
    parse_wrk_time_ms,
    per_job,
    percentile,
    rate,
    ratio,
    strip_histograms,
    summarize_ms,
    worker_rss,
)

WRK_OUTPUT = """\
Running 2m test @ http://127.0.0.1:40123/jobs
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.12ms    2.01ms 130.11ms   80.00%
    Req/Sec     1.60k   150.00     1.90k    70.00%
  Latency Distribution
     50%    4.80ms
     75%    6.00ms
     90%    7.50ms
     99%   12.00ms
BENCH_THREAD_DONE
BENCH_THREAD_DONE
BENCH_LATENCY_US 812:3,4800:2,12000:1
BENCH_STATUS 202=4990 503=10
  5000 requests in 1.56s, 10.00MB read
  Socket errors: connect 0, read 1, write 0, timeout 3
  Non-2xx or 3xx responses: 10
Requests/sec:   3205.13
Transfer/sec:      6.41MB
"""

WRK_CLEAN = """\
Running 1s test @ http://127.0.0.1:8000/jobs
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   850.00us  100.00us   2.00ms   90.00%
    Req/Sec     1.10k    50.00     1.20k    60.00%
  Latency Distribution
     50%  820.00us
     75%  900.00us
     90%    1.00ms
     99%    1.50ms
  1100 requests in 1.00s, 300.00KB read
Requests/sec:   1100.00
Transfer/sec:    300.00KB
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [("850.00us", 0.85), ("4.12ms", 4.12), ("1.20s", 1200.0), ("2.00m", 120_000.0)],
)
def test_wrk_durations_are_read_in_milliseconds(text, expected):
    assert parse_wrk_time_ms(text) == pytest.approx(expected)


def test_a_wrk_duration_without_a_unit_is_refused():
    with pytest.raises(ValueError):
        parse_wrk_time_ms("12")


def test_wrk_output_gives_rate_percentiles_and_errors():
    result = parse_wrk(WRK_OUTPUT)
    assert result["requests"] == 5000
    assert result["seconds"] == pytest.approx(1.56)
    assert result["rps"] == pytest.approx(3205.13)
    assert result["p50_ms"] == pytest.approx(4.8)
    assert result["p75_ms"] == pytest.approx(6.0)
    assert result["p90_ms"] == pytest.approx(7.5)
    assert result["p99_ms"] == pytest.approx(12.0)
    assert result["avg_ms"] == pytest.approx(5.12)
    assert result["max_ms"] == pytest.approx(130.11)
    assert result["non_2xx"] == 10
    assert result["socket_errors"] == {"connect": 0, "read": 1, "write": 0, "timeout": 3}
    assert result["statuses"] == {"202": 4990, "503": 10}
    assert result["histogram_us"] == {812: 3, 4800: 2, 12000: 1}


def test_clean_wrk_output_in_microseconds_has_no_errors():
    result = parse_wrk(WRK_CLEAN)
    assert result["p50_ms"] == pytest.approx(0.82)
    assert result["p99_ms"] == pytest.approx(1.5)
    assert result["non_2xx"] == 0
    assert result["socket_errors"] == {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    assert "statuses" not in result
    assert "histogram_us" not in result


def test_wrk_output_without_a_summary_is_an_error():
    with pytest.raises(ValueError, match="no request summary"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_percentiles_interpolate_between_ranks():
    values = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert percentile(values, 0) == 1
    assert percentile(values, 100) == 10
    assert percentile(values, 50) == pytest.approx(5.5)
    assert percentile(values, 99) == pytest.approx(9.91)
    assert percentile(reversed(values), 50) == pytest.approx(5.5)  # order does not matter
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_histograms_parse_and_give_wrk_style_percentiles():
    assert parse_histogram("") == {}
    assert parse_histogram("5:1,5:2,7:1") == {5: 3, 7: 1}
    histogram = {value: 1 for value in range(1, 11)}  # 1..10, once each
    # wrk: rank = round(p/100 * count + 0.5), the first value whose running count reaches it
    assert histogram_percentile(histogram, 50) == 6
    assert histogram_percentile(histogram, 99) == 10
    assert histogram_percentile(histogram, 0) == 1
    assert histogram_percentile({100: 99, 5000: 1}, 98) == 100
    assert histogram_percentile({100: 99, 5000: 1}, 99) == 5000  # rank 100 of 100
    assert histogram_percentile({100: 98, 5000: 2}, 99) == 5000
    assert histogram_percentile({}, 50) is None


def test_runs_merge_into_one_rate_and_exact_percentiles():
    fast = {
        "requests": 900,
        "seconds": 1.0,
        "rps": 900.0,
        "non_2xx": 0,
        "socket_errors": {"connect": 0, "read": 0, "write": 0, "timeout": 1},
        "statuses": {"202": 900},
        "histogram_us": {1000: 900},
    }
    slow = {
        "requests": 100,
        "seconds": 1.0,
        "rps": 100.0,
        "non_2xx": 2,
        "truncated": True,
        "socket_errors": {"connect": 0, "read": 0, "write": 0, "timeout": 0},
        "statuses": {"202": 98, "429": 2},
        "histogram_us": {20000: 90, 90000: 10},
    }
    merged = merge_runs([fast, slow])
    assert merged["requests"] == 1000
    assert merged["seconds"] == 2.0
    assert merged["rps"] == 500.0
    assert merged["rounds"] == 2
    assert merged["rps_each"] == [900.0, 100.0]
    assert merged["p50_ms"] == 1.0
    assert merged["p90_ms"] == 20.0  # rank 901 of 1000
    assert merged["p99_ms"] == 90.0  # rank 991 of 1000
    assert merged["max_ms"] == 90.0
    assert merged["non_2xx"] == 2
    assert merged["statuses"] == {"202": 998, "429": 2}
    assert merged["socket_errors"]["timeout"] == 1
    assert merged["truncated"] is True


def test_runs_without_histograms_merge_to_the_median_of_their_percentiles():
    runs = [
        {"requests": 10, "seconds": 1.0, "p50_ms": 1.0, "p99_ms": 9.0},
        {"requests": 10, "seconds": 1.0, "p50_ms": 3.0, "p99_ms": 11.0},
    ]
    merged = merge_runs(runs)
    assert merged["p50_ms"] == 2.0
    assert merged["p99_ms"] == 10.0
    assert merged["max_ms"] is None


def test_summaries_rates_and_ratios():
    summary = summarize_ms([3.0, 1.0, 2.0])
    assert summary == {"samples": 3, "p50_ms": 2.0, "p99_ms": pytest.approx(2.98), "max_ms": 3.0}
    assert summarize_ms([])["p50_ms"] is None
    assert rate(500, 2.0) == 250
    assert rate(10, 0) is None
    assert ratio(300.0, 600.0) == 0.5
    assert ratio(None, 600.0) is None
    assert ratio(300.0, None) is None
    assert ratio(300.0, 0) is None


def test_lookup_follows_dotted_paths_and_tolerates_gaps():
    results = {"taskplane": {"submit_c16": {"rps": 900.0}}}
    assert lookup(results, "taskplane.submit_c16.rps") == 900.0
    assert lookup(results, "taskplane.batch.per_s") is None
    assert lookup(results, "baseline.submit_c16.rps") is None
    assert lookup(results, None) is None


def _rss(worker: float, measured: str = "pool child") -> dict:
    child = worker if measured == "pool child" else None
    return {"worker": worker, "worker_child": child, "worker_process": 40.0, "measured": measured}


THREADS = "worker process (no pool children)"

RESULTS = {
    "settings": {"jobs": 5000, "quick": False, "webhook_jobs": 500, "backlog": 100_000,
                 "taskplane_workers": 1, "taskplane_worker_args": [],
                 "taskplane_worker_groups": {
                     "io": {"pool": "threads", "concurrency": 16, "prefetch_multiplier": 1},
                     "short": {"pool": "prefork", "concurrency": None, "prefetch_multiplier": 4}},
                 "taskplane_groups": {"noop": "short", "webhook": "io"}},
    "machine": {"nproc": 2, "cpu_model": "Test CPU", "ram_gb": 8.0, "python": "3.11.7",
                "rabbitmq": "3.10.8", "erlang": "25", "redis": "7.0.15", "celery": "5.7.0",
                "load_generator": "wrk 4.1.0"},
    "ceiling": {
        "publish_sync": {"per_s": 1500.0, "p50_ms": 0.6, "p99_ms": 2.0},
        "publish_window": {"per_s": 30_000.0},
        "consume": {"per_s": 15_000.0},
    },
    "sink": {"ceiling": {"keepalive_c16": {"rps": 12_000.0}, "close_c16": {"rps": 4_000.0}},
             "job_requests": 3000, "jobs_finished": 3000},
    "baseline": {
        "submit_c1": {"rps": 800.0, "p50_ms": 1.0, "p99_ms": 3.0},
        "submit_c16": {"rps": 1000.0, "p50_ms": 8.0, "p99_ms": 40.0},
        "drain": {"per_s": 1000.0},
        "e2e": {"per_s": 500.0},
        "webhook": {"submit_c16": {"rps": 900.0}, "drain": {"per_s": 100.0},
                    "e2e": {"per_s": 80.0}, "rss_mb": _rss(60.0)},
        "idle": {"submit_to_done": {"p50_ms": 5.0, "p99_ms": 15.0}},
        "rss_mb": {"web": 50.0, **_rss(55.0)},
    },
    "guarded": {
        "submit_c1": {"rps": 500.0, "p50_ms": 1.8, "p99_ms": 6.0},
        "submit_c16": {"rps": 800.0, "p50_ms": 12.0, "p99_ms": 50.0},
        "drain": {"per_s": 600.0},
        "e2e": {"per_s": 300.0},
        "webhook": {"submit_c16": {"rps": 700.0}, "drain": {"per_s": 90.0},
                    "e2e": {"per_s": 70.0}, "rss_mb": _rss(62.0)},
        "idle": {"submit_to_done": {"p50_ms": 7.0, "p99_ms": 18.0}},
        "rss_mb": {"web": 51.0, **_rss(57.0)},
    },
    "taskplane": {
        "submit_c1": {"rps": 400.0, "p50_ms": 2.0, "p99_ms": 5.0},
        "submit_c16": {"rps": 1600.0, "p50_ms": 10.0, "p99_ms": 20.0},
        "batch": {"available": True, "per_s": 16_000.0},
        "drain": {"per_s": 1200.0},
        "e2e": {"per_s": 700.0},
        "webhook": {"submit_c16": {"rps": 800.0}, "drain": {"per_s": 400.0},
                    "e2e": {"per_s": 300.0}, "rss_mb": _rss(80.0, THREADS)},
        "idle": {
            "started_minus_created": {"p50_ms": 3.0, "p99_ms": 9.0},
            "submit_to_done": {"p50_ms": 6.0, "p99_ms": 12.0},
        },
        "rss_mb": {"web": 70.0, **_rss(90.0)},
        "workers": {"noop": "2 (prefork)", "webhook": "16 (thread)"},
        "backlog": {
            "jobs": 5000,
            "size": 100_000,
            "fill": {"per_s": 15_000.0},
            "empty": {"rounds": 2, "submit_c16": {"rps": 1000.0, "p99_ms": 20.0},
                      "get_c16": {"rps": 2000.0, "p50_ms": 4.0, "p99_ms": 10.0},
                      "drain": {"per_s": 1000.0}},
            "full": {"submit_c16": {"rps": 950.0, "p99_ms": 22.0},
                     "get_c16": {"rps": 1900.0, "p50_ms": 4.2, "p99_ms": 12.0},
                     "drain": {"per_s": 980.0}},
        },
        "memory": {
            "redis": {"queued": {"jobs": 100_000, "bytes_per_job": 300.0, "keys_per_job": 1.0,
                                 "record_bytes_sampled": 264.0},
                      "finished": {"jobs": 5000, "bytes_per_job": 700.0, "keys_per_job": 1.02,
                                   "record_bytes_sampled": 488.0}},
            "rabbitmq": {"messages": 100_000, "queue_bytes_per_job": 270.0,
                         "node_bytes_per_job": 900.0},
        },
    },
    "errors": [],
}  # fmt: skip


def _results(**changes):
    """RESULTS (every target met) with figures changed at dotted paths."""
    results = copy.deepcopy(RESULTS)
    for path, value in changes.items():
        node = results
        *parents, last = path.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return results


def _by_name(targets):
    return {t.name: t for t in targets}


def test_targets_pass_when_every_figure_is_within_its_limit():
    targets = _by_name(evaluate_targets(_results()))
    assert targets["submit_c16_vs_baseline"].value == pytest.approx(1.6)
    assert targets["submit_c16_vs_guarded"].value == pytest.approx(2.0)
    assert targets["drain_vs_baseline"].value == pytest.approx(1.2)
    assert targets["drain_vs_guarded"].value == pytest.approx(2.0)
    assert targets["e2e_vs_baseline"].value == pytest.approx(1.4)
    assert targets["webhook_drain_vs_baseline"].value == pytest.approx(4.0)
    assert targets["webhook_e2e_vs_baseline"].value == pytest.approx(3.75)
    assert targets["backlog_submit_c16"].value == pytest.approx(0.95)
    assert targets["backlog_get_p50"].value == pytest.approx(1.05)
    assert targets["backlog_drain"].value == pytest.approx(0.98)
    assert all(t.passed for t in targets.values()), targets


def test_every_target_of_the_issue_is_there():
    names = {t.name for t in evaluate_targets(_results())}
    assert names == {
        "drain_vs_baseline", "e2e_vs_baseline", "webhook_drain_vs_baseline",
        "webhook_e2e_vs_baseline", "submit_c16_vs_guarded", "drain_vs_guarded",
        "e2e_vs_guarded", "submit_c16_vs_baseline", "submit_c16_p99", "batch_submit",
        "backlog_submit_c16", "backlog_get_p50", "backlog_drain", "idle_started_p50",
        "web_rss", "worker_child_rss",
    }  # fmt: skip


def test_targets_fail_on_each_missed_limit():
    results = _results(
        taskplane__submit_c16={"rps": 999.0, "p99_ms": 25.5},
        taskplane__drain={"per_s": 899.0},
        taskplane__e2e={"per_s": 449.0},
        taskplane__webhook={"drain": {"per_s": 99.0}, "e2e": {"per_s": 79.0}},
        taskplane__batch={"available": True, "per_s": 14_999.0},
        taskplane__idle={"started_minus_created": {"p50_ms": 5.01}},
        taskplane__rss_mb={"web": 80.1, **_rss(100.5)},
        guarded__submit_c16={"rps": 800.0},
        guarded__drain={"per_s": 600.0},
        guarded__e2e={"per_s": 300.0},
    )
    results["baseline"]["drain"]["per_s"] = 900.0
    backlog = results["taskplane"]["backlog"]
    backlog["full"]["submit_c16"]["rps"] = 899.0
    backlog["full"]["get_c16"]["p50_ms"] = 4.41
    backlog["full"]["drain"]["per_s"] = 899.0
    failed = [t for t in evaluate_targets(results) if t.passed is not False]
    assert not failed, failed


def test_limits_themselves_pass():
    results = _results(
        taskplane__submit_c16={"rps": 1200.0, "p99_ms": 25.0},
        taskplane__drain={"per_s": 1000.0},
        taskplane__e2e={"per_s": 500.0},
        taskplane__webhook={"drain": {"per_s": 100.0}, "e2e": {"per_s": 80.0}},
        taskplane__batch={"available": True, "per_s": 15_000.0},
        taskplane__idle={"started_minus_created": {"p50_ms": 5.0}},
        taskplane__rss_mb={"web": 80.0, **_rss(100.0)},
        guarded__submit_c16={"rps": 800.0},
        guarded__drain={"per_s": 400.0},
        guarded__e2e={"per_s": 200.0},
        baseline__submit_c16={"rps": 1200.0},
    )
    backlog = results["taskplane"]["backlog"]
    backlog["full"]["submit_c16"]["rps"] = 900.0
    backlog["full"]["get_c16"]["p50_ms"] = 4.4
    backlog["full"]["drain"]["per_s"] = 900.0
    targets = _by_name(evaluate_targets(results))
    assert targets["backlog_get_p50"].value == pytest.approx(1.1)
    assert all(t.passed for t in targets.values()), [t for t in targets.values() if not t.passed]


def test_a_backlog_that_helps_passes():
    """Within 10% is one-sided: faster or quicker with the backlog is no failure."""
    results = _results()
    backlog = results["taskplane"]["backlog"]
    backlog["full"]["submit_c16"]["rps"] = 2000.0
    backlog["full"]["get_c16"]["p50_ms"] = 1.0
    backlog["full"]["drain"]["per_s"] = 3000.0
    targets = _by_name(evaluate_targets(results))
    assert targets["backlog_submit_c16"].passed and targets["backlog_drain"].passed
    assert targets["backlog_get_p50"].passed


def test_a_missing_figure_is_not_applicable_rather_than_failed():
    results = _results(taskplane__batch={"available": False, "status": 404}, guarded=None)
    del results["baseline"]["e2e"]
    del results["taskplane"]["backlog"]
    targets = _by_name(evaluate_targets(results))
    assert targets["batch_submit"].passed is None
    assert targets["batch_submit"].note == "batch: not available"
    assert targets["e2e_vs_baseline"].passed is None
    assert targets["submit_c16_vs_guarded"].passed is None
    assert targets["backlog_drain"].passed is None
    assert "100,000 waiting" in targets["backlog_drain"].description  # from the settings
    assert mark(None) == "n/a"
    assert mark(True) == "PASS"
    assert mark(False) == "FAIL"


def test_the_worker_rss_target_says_when_it_measured_the_worker_process():
    targets = _by_name(evaluate_targets(_results(taskplane__rss_mb=_rss(85.0, THREADS))))
    assert targets["worker_child_rss"].value == 85.0
    assert targets["worker_child_rss"].note == THREADS
    assert worker_rss(_results()) == (90.0, "")
    # results of earlier runs have only worker_child
    assert worker_rss({"taskplane": {"rss_mb": {"worker_child": 65.0}}}) == (65.0, "")
    assert worker_rss({}) == (None, "")


def test_backlog_ratios_and_memory_per_job():
    ratios = backlog_ratios(RESULTS["taskplane"]["backlog"])
    assert ratios["submit_c16_rps"] == pytest.approx(0.95)
    assert ratios["get_c16_p50_ms"] == pytest.approx(1.05)
    assert ratios["get_c16_p99_ms"] == pytest.approx(1.2)
    assert ratios["drain_per_s"] == pytest.approx(0.98)
    assert backlog_ratios({})["drain_per_s"] is None
    assert per_job(1000, 31_000, 100) == 300.0
    assert per_job(1000, 900, 100) == -1.0  # a server-wide figure can fall
    assert per_job(None, 900, 100) is None
    assert per_job(1000, 900, 0) is None


def test_backlog_rounds_merge_into_one_side():
    def load(rps, histogram):
        return {"requests": sum(histogram.values()), "seconds": sum(histogram.values()) / rps,
                "rps": rps, "histogram_us": histogram}  # fmt: skip

    first = {
        "submit_c16": load(1000.0, {10_000: 1500}),
        "get_c16": load(2000.0, {4000: 1000}),
        "drain": {"jobs": 1000, "finished": 1000, "failed": 0, "seconds": 1.998, "per_s": 500.0},
    }
    second = {
        "submit_c16": load(500.0, {30_000: 500}),
        "get_c16": load(1000.0, {8000: 1000}),
        "drain": {"jobs": 1000, "finished": 1000, "failed": 1, "seconds": 1.998, "per_s": 500.0},
    }
    merged = merge_backlog_rounds([first, second])
    assert merged["rounds"] == 2
    assert merged["submit_c16"]["rps"] == pytest.approx(800.0)  # 2,000 in 1.5 s + 1 s
    assert merged["submit_c16"]["p50_ms"] == 10.0 and merged["submit_c16"]["p99_ms"] == 30.0
    assert merged["get_c16"]["p99_ms"] == 8.0
    assert merged["drain"]["per_s"] == pytest.approx(500.0)  # 999 + 999 gaps over 3.996 s
    assert merged["drain"]["failed"] == 1
    assert merged["drain"]["per_s_each"] == [500.0, 500.0]
    assert "histogram_us" not in str(strip_histograms({"rounds": [first, second]}))
    assert merge_backlog_rounds([]) == {"rounds": 0}


def test_the_backlog_table_has_empty_full_and_their_ratio():
    rows = {row[0]: row[1:] for row in backlog_rows(RESULTS["taskplane"]["backlog"])}
    assert len(rows) == len(BACKLOG_ROWS)
    assert rows["submit c16 (req/s)"] == ["1,000", "950", "0.95x"]
    assert rows["GET /jobs/<id> c16 p50 (ms)"] == ["4.00", "4.20", "1.05x"]
    assert rows["drain, first N finishes (jobs/s)"] == ["1,000", "980", "0.98x"]


def test_target_as_dict_carries_the_verdict():
    target = Target("x", "x <= 1", 2.0, 1.0, at_least=False)
    assert target.as_dict()["passed"] is False


@pytest.mark.parametrize(
    ("value", "kind", "text"),
    [
        (None, "rate", "-"),
        (12345.6, "rate", "12,346"),
        (3.14159, "ms", "3.14"),
        (123.456, "ms", "123.5"),
        (75.94, "mb", "75.9"),
        (0.4567, "x", "0.46x"),
    ],
)
def test_values_are_formatted_by_kind(value, kind, text):
    assert format_value(value, kind) == text


def test_every_row_points_at_taskplane_and_labels_are_unique():
    assert all(row.taskplane for row in ROWS)
    assert len({row.label for row in ROWS}) == len(ROWS)
    # Both baselines are measured the same way: a row has both or neither.
    assert all((row.baseline is None) == (row.guarded is None) for row in ROWS)


def _line(lines, label):
    return next(line for line in lines if line.startswith(label))


def test_the_table_shows_machine_figures_ratios_and_targets():
    results = _results()
    table = format_table(results)
    lines = table.splitlines()
    assert lines[0] == "Taskplane benchmark: N=5000 jobs per phase"
    assert "2 CPUs (Test CPU), 8.0 GB RAM" in table
    assert "RabbitMQ 3.10.8" in table and "Redis 7.0.15" in table and "Python 3.11.7" in table
    assert "short (noop): prefork, concurrency one per CPU, prefetch 4 -> 2 (prefork)" in table
    assert "io (webhook): threads, concurrency 16, prefetch 1 -> 16 (thread)" in table
    assert "1 no-op worker process(es); extra worker args: none" in table
    header = _line(lines, "figure")
    assert header.split() == [
        "figure", "ceiling", "baseline", "guarded", "taskplane", "tp/base", "tp/guarded", "tp/ceil"
    ]  # fmt: skip
    c16 = _line(lines, "submit c16 (req/s)")
    assert c16.split()[-7:] == ["30,000", "1,000", "800", "1,600", "1.60x", "2.00x", "0.05x"]
    batch = _line(lines, "batch submit")
    assert batch.split()[-7:] == ["30,000", "-", "-", "16,000", "-", "-", "0.53x"]
    drain = _line(lines, "webhook drain")
    assert drain.split()[-7:] == ["12,000", "100", "90", "400", "4.00x", "4.44x", "0.03x"]
    rss = _line(lines, "web worker RSS")
    assert rss.split()[-7:] == ["-", "50.0", "51.0", "70.0", "1.40x", "1.37x", "-"]
    webhook_rss = _line(lines, "worker RSS, webhook job")
    assert webhook_rss.split()[-7:] == ["-", "60.0", "62.0", "80.0", "1.33x", "1.29x", "-"]
    assert "so the worker process, for: taskplane webhook." in table
    assert "12,000 req/s keep-alive" in table and "4,000 req/s with a new connection" in table
    assert "[PASS] single submit throughput at c16 >= 1.0x baseline: 1.60x" in table
    assert "[PASS] single submit throughput at c16 >= 1.5x guarded: 2.00x" in table
    assert "[PASS] batch submit >= 15,000 jobs/s accepted: 16,000 jobs/s" in table
    assert "[PASS] backlog: drain rate with 100,000 waiting >= 0.9x empty: 0.98x" in table
    assert "[PASS] web worker RSS <= 80 MB: 70.0 MB" in table
    # Every data row of the main table has the same width, so the columns line up.
    start = lines.index(header) + 2
    rows = lines[start : lines.index("", start)]
    assert [row.split("  ")[0].strip() for row in rows] == [r.label for r in ROWS]
    assert len({len(line) for line in rows}) == 1


def test_the_table_shows_backlog_growth_and_memory_per_job():
    table = format_table(_results())
    lines = table.splitlines()
    assert "an empty queue (2 rounds, before and after) vs 100,000 waiting in the same" in table
    assert "Filled through POST /jobs/batch at 15,000 jobs/s." in table
    header = next(line for line in lines if line.endswith("backlog/empty"))
    assert header.split() == ["figure", "empty", "100,000", "waiting", "backlog/empty"]
    assert _line(lines, "GET /jobs/<id> c16 p99").split()[-3:] == ["10.0", "12.0", "1.20x"]
    assert "Redis 300 B per queued job (used_memory over 100,000 records" in table
    assert "700 B per finished job (over 5,000; one record 488 B, 1.02 keys per job)" in table
    assert "270 B of the queue's memory, 900 B of the node's" in table
    assert "noise" not in table
    results = _results()
    results["taskplane"]["memory"]["redis"]["finished"]["bytes_per_job"] = 73.0
    results["taskplane"]["memory"]["rabbitmq"]["node_bytes_per_job"] = -3898.0
    table = format_table(results)
    assert "73 B (noise: below what it must be) per finished job" in table
    assert "-3,898 B (noise: below what it must be) of the node's" in table


def test_the_table_says_when_batch_is_not_available_and_lists_errors():
    results = _results(taskplane__batch={"available": False, "status": 405})
    results["errors"] = ["baseline e2e: TimeoutError: 3 of 500 jobs not finished"]
    results["warnings"] = ["taskplane submit_c16: 12 non-2xx answers {'429': 12}"]
    table = format_table(results)
    assert "warnings:\n  taskplane submit_c16: 12 non-2xx answers" in table
    assert "batch: not available (POST /jobs/batch answered 405)" in table
    assert "[n/a] batch submit >= 15,000 jobs/s accepted: - jobs/s  (batch: not available)" in (
        table
    )
    assert "errors:\n  baseline e2e: TimeoutError" in table


def test_a_table_of_an_earlier_run_still_formats():
    """results.json of a run before the guarded baseline, webhooks and the backlog."""
    old = copy.deepcopy(RESULTS)
    for key in ("guarded", "sink"):
        del old[key]
    for key in ("webhook", "backlog", "memory", "workers"):
        del old["taskplane"][key]
    del old["settings"]["taskplane_worker_groups"]
    old["taskplane"]["rss_mb"] = {"web": 70.0, "worker_child": 90.0}
    table = format_table(old)
    assert "backlog growth" not in table and "memory per job" not in table
    assert "[PASS] worker child RSS <= 100 MB: 90.0 MB" in table
    assert "[n/a] worker drain >= 1.5x guarded: -" in table


def test_cpu_per_job_is_split_by_process_and_summed():
    from bench.cpu_account import per_job_ms

    split = per_job_ms({"web": 1.0, "worker": 2.0}, {"web": 2.0, "worker": 2.5}, 1000)
    assert split == {"web": 1.0, "worker": 0.5, "total": 1.5}
    assert per_job_ms({"web": 0.0}, {"web": 1.0}, 0) == {}


def test_cpu_lines_show_each_measured_system_and_nothing_when_unmeasured():
    results = {
        "taskplane": {
            "e2e": {
                "cpu_ms_per_job": {
                    "web": 1.5,
                    "worker": 2.0,
                    "rabbitmq": 0.5,
                    "redis": 0.25,
                    "total": 4.25,
                }
            }
        },  # fmt: skip
        "baseline": {"e2e": {}},
    }
    from bench import report

    lines = report.cpu_lines(results)
    assert lines[0].split() == ["CPU", "ms", "per", "job,", "end", "to", "end", "web", "worker",
                                "rabbitmq", "redis", "total"]  # fmt: skip
    assert lines[2].split() == ["no-op,", "taskplane", "1.50", "2.00", "0.50", "0.25", "4.25"]
    assert len([line for line in lines if line.startswith("no-op")]) == 1
    assert report.cpu_lines({}) == []
