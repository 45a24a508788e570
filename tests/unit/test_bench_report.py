"""The benchmark's pure parts: wrk parsing, percentiles, ratios, targets, the table."""

import pytest

from bench.report import (
    ROWS,
    Target,
    evaluate_targets,
    format_table,
    format_value,
    histogram_percentile,
    lookup,
    mark,
    merge_runs,
    parse_histogram,
    parse_wrk,
    parse_wrk_time_ms,
    percentile,
    rate,
    ratio,
    summarize_ms,
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


def _results(**taskplane_overrides):
    taskplane = {
        "submit_c1": {"rps": 400.0, "p50_ms": 2.0, "p99_ms": 5.0},
        "submit_c16": {"rps": 1200.0, "p50_ms": 10.0, "p99_ms": 20.0},
        "batch": {"available": True, "per_s": 12_000.0},
        "e2e": {"per_s": 700.0},
        "idle": {
            "started_minus_created": {"p50_ms": 3.0, "p99_ms": 9.0},
            "submit_to_done": {"p50_ms": 6.0, "p99_ms": 12.0},
        },
        "rss_mb": {"web": 70.0, "worker_child": 90.0},
    }
    taskplane.update(taskplane_overrides)
    return {
        "settings": {"jobs": 5000, "quick": False},
        "machine": {"nproc": 2, "cpu_model": "Test CPU", "ram_gb": 8.0, "python": "3.11.7",
                    "rabbitmq": "3.10.8", "erlang": "25", "redis": "7.0.15", "celery": "5.7.0",
                    "load_generator": "wrk 4.1.0"},
        "ceiling": {
            "publish_sync": {"per_s": 1500.0, "p50_ms": 0.6, "p99_ms": 2.0},
            "publish_window": {"per_s": 30_000.0},
            "consume": {"per_s": 15_000.0},
        },
        "baseline": {
            "submit_c1": {"rps": 800.0, "p50_ms": 1.0, "p99_ms": 3.0},
            "submit_c16": {"rps": 1000.0, "p50_ms": 8.0, "p99_ms": 40.0},
            "e2e": {"per_s": 500.0},
            "idle": {"submit_to_done": {"p50_ms": 5.0, "p99_ms": 15.0}},
            "rss_mb": {"web": 50.0, "worker_child": 55.0},
        },
        "taskplane": taskplane,
        "errors": [],
    }  # fmt: skip


def _by_name(targets):
    return {t.name: t for t in targets}


def test_targets_pass_when_every_figure_is_within_its_limit():
    targets = _by_name(evaluate_targets(_results()))
    assert targets["submit_c16_vs_baseline"].value == pytest.approx(1.2)
    assert targets["e2e_vs_baseline"].value == pytest.approx(1.4)
    assert all(t.passed for t in targets.values()), targets


def test_targets_fail_on_each_missed_limit():
    results = _results(
        submit_c16={"rps": 900.0, "p99_ms": 25.5},
        batch={"available": True, "per_s": 9_999.0},
        e2e={"per_s": 499.0},
        idle={"started_minus_created": {"p50_ms": 5.01}},
        rss_mb={"web": 80.1, "worker_child": 100.5},
    )
    assert not any(t.passed for t in evaluate_targets(results))


def test_limits_themselves_pass():
    results = _results(
        submit_c16={"rps": 1000.0, "p99_ms": 25.0},
        batch={"available": True, "per_s": 10_000.0},
        e2e={"per_s": 500.0},
        idle={"started_minus_created": {"p50_ms": 5.0}},
        rss_mb={"web": 80.0, "worker_child": 100.0},
    )
    assert all(t.passed for t in evaluate_targets(results))


def test_a_missing_figure_is_not_applicable_rather_than_failed():
    results = _results(batch={"available": False, "status": 404})
    del results["baseline"]["e2e"]
    targets = _by_name(evaluate_targets(results))
    assert targets["batch_submit"].passed is None
    assert targets["batch_submit"].note == "batch: not available"
    assert targets["e2e_vs_baseline"].passed is None
    assert mark(None) == "n/a"
    assert mark(True) == "PASS"
    assert mark(False) == "FAIL"


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


def test_the_table_shows_machine_figures_ratios_and_targets():
    results = _results()
    table = format_table(results)
    lines = table.splitlines()
    assert lines[0] == "Taskplane benchmark: N=5000 jobs per phase"
    assert "2 CPUs (Test CPU), 8.0 GB RAM" in table
    assert "RabbitMQ 3.10.8" in table and "Redis 7.0.15" in table and "Python 3.11.7" in table
    header = next(line for line in lines if line.startswith("figure"))
    assert header.split() == ["figure", "ceiling", "baseline", "taskplane", "tp/base", "tp/ceil"]
    c16 = next(line for line in lines if line.startswith("submit c16 (req/s)"))
    assert c16.split()[-5:] == ["30,000", "1,000", "1,200", "1.20x", "0.04x"]
    batch = next(line for line in lines if line.startswith("batch submit"))
    assert batch.split()[-5:] == ["30,000", "-", "12,000", "-", "0.40x"]
    rss = next(line for line in lines if line.startswith("web worker RSS"))
    assert rss.split()[-5:] == ["-", "50.0", "70.0", "1.40x", "-"]
    assert "[PASS] single submit throughput at c16 >= 1.0x baseline: 1.20x" in table
    assert "[PASS] batch submit >= 10,000 jobs/s accepted: 12,000 jobs/s" in table
    assert "[PASS] web worker RSS <= 80 MB: 70.0 MB" in table
    # Every data row has the same width, so the columns line up.
    rows = [line for line in lines if line.startswith(tuple(r.label for r in ROWS))]
    assert len(rows) == len(ROWS)
    assert len({len(line) for line in rows}) == 1


def test_the_table_says_when_batch_is_not_available_and_lists_errors():
    results = _results(batch={"available": False, "status": 405})
    results["errors"] = ["baseline e2e: TimeoutError: 3 of 500 jobs not finished"]
    results["warnings"] = ["taskplane submit_c16: 12 non-2xx answers {'429': 12}"]
    table = format_table(results)
    assert "warnings:\n  taskplane submit_c16: 12 non-2xx answers" in table
    assert "batch: not available (POST /jobs/batch answered 405)" in table
    assert "[n/a] batch submit >= 10,000 jobs/s accepted: - jobs/s  (batch: not available)" in (
        table
    )
    assert "errors:\n  baseline e2e: TimeoutError" in table
