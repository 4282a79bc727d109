"""The converter benchmark's arithmetic and table: overall and per-byte throughput (after the
fixed start-up), each against the disk's cold read and cold copy, on literal figures."""

from __future__ import annotations

import pytest

from loadtests.bench_convert import markdown, result_row


def _row() -> dict:
    # 2 GB in 10 s, of which 2 s start-up; the disk reads at 0.5 GB/s and copies at 0.25 GB/s.
    return result_row("safetensors", "--no-hash", total=2 * 10**9, seconds=10.0, startup=2.0,
                      peak=int(1.5e9), largest_in=10**9, largest_out=int(0.5e9),
                      disk={"cold_read_gbps": 0.5, "cold_copy_gbps": 0.25})


def test_result_row() -> None:
    row = _row()
    assert row["gbps"] == pytest.approx(0.2)
    assert row["per_byte_gbps"] == pytest.approx(0.25)  # 2 GB in the 8 s after start-up
    assert row["vs_cold_read"] == pytest.approx(0.4)
    assert row["vs_cold_copy"] == pytest.approx(0.8)
    assert row["per_byte_vs_cold_read"] == pytest.approx(0.5)
    assert row["per_byte_vs_cold_copy"] == pytest.approx(1.0)
    assert row["rss_over_largest_shard"] == pytest.approx(1.5)
    assert row["startup_seconds"] == 2.0 and row["source_gb"] == pytest.approx(2.0)


def test_markdown_table() -> None:
    lines = markdown([_row()]).splitlines()
    assert len(lines) == 3
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert len(lines[1].strip("|").split("|")) == len(header)
    assert dict(zip(header, [c.strip() for c in lines[2].strip("|").split("|")], strict=True)) \
        == {"source": "safetensors", "manifest hashes": "--no-hash", "converter": "0.20 GB/s",
            "x cold read": "0.40", "x cold copy": "0.80", "start-up": "2.0 s",
            "per byte after start-up": "0.25 GB/s", "per byte x cold read": "0.50",
            "per byte x cold copy": "1.00",
            "cold read just before": "0.50 GB/s", "cold copy (read + write + fsync)": "0.25 GB/s",
            "peak RSS / largest shard": "1.50"}
