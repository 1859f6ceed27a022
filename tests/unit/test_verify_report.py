"""The verify report, fault list parsing, recording round trip, refusal detection, plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.unit.test_verify_checker import W, failover_recording, probes

from postgres_ras.errors import FatalError
from postgres_ras.verify import partition, report
from postgres_ras.verify.checker import check
from postgres_ras.verify.events import recording_from_json, recording_to_json
from postgres_ras.verify.run import ControllerLogs, parse_faults


def test_parse_faults_expands_repeat_and_refuses_unknown() -> None:
    assert parse_faults("kill-primary, repeat:2,restart-pgpool") == (
        ("kill-primary", "kill-primary"),
        ("kill-primary", "repeat 1/2"),
        ("kill-primary", "repeat 2/2"),
        ("restart-pgpool", "restart-pgpool"),
    )
    assert len(parse_faults("repeat")) == 10
    with pytest.raises(FatalError, match="unknown fault 'kill-everything'"):
        parse_faults("kill-everything")
    # Known here; refused by verify() when the cluster runs one Consul server.
    assert parse_faults("kill-consul-leader") == (("kill-consul-leader", "kill-consul-leader"),)


def test_partition_is_refused_with_the_reason_when_it_cannot_be_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(partition, "unavailable", lambda: "partition-primary needs root")
    with pytest.raises(FatalError, match="not available here: partition-primary needs root"):
        parse_faults("kill-primary,partition-primary")
    monkeypatch.setattr(partition, "unavailable", lambda: "")
    assert parse_faults("partition-primary") == (("partition-primary", "partition-primary"),)
    with pytest.raises(FatalError, match="only repeat takes a count"):
        parse_faults("kill-primary:3")


def test_json_has_per_fault_and_total_figures() -> None:
    f = check(failover_recording())
    data = report.to_json(f, {"mode": "asynchronous"})
    keys = {
        "lost_acknowledged_writes",
        "duplicate_writes",
        "split_brain_intervals",
        "max_write_outage_s",
        "recovery_s",
    }
    assert keys <= set(data["total"]) and keys <= set(data["faults"][0])
    assert keys <= set(data["by_fault"]["kill-primary"])
    assert data["ok"] is True and data["total"]["recovery_s"] == 10.0
    json.dumps(data)  # serialisable


def test_table_says_which_promise_broke() -> None:
    rec = failover_recording()
    pr = [p for p in rec.probes if p.member != "node1"] + probes("node1", W, 0.0, 12.0)
    f = check(failover_recording(probes=pr))
    text = report.table(f, {"mode": "asynchronous", "members": 3, "duration_s": 20})
    assert "PROMISES BROKEN" in text and "split brain: node1 and node2" in text
    assert "| kill-primary" in text
    ok = report.table(check(failover_recording()), {"mode": "asynchronous"})
    assert "all promises kept" in ok


def test_recording_round_trips_through_json() -> None:
    rec = failover_recording(indeterminate=frozenset({5, 6}))
    back = recording_from_json(json.loads(json.dumps(recording_to_json(rec))))
    assert back == rec


def test_controller_refusal_is_read_from_new_log_lines_only(tmp_path: Path) -> None:
    log = tmp_path / "node1-controller.log"
    log.write_text("old WARNING ignoring invalid dynamic config (synchronous_mode ...)\n")
    logs = ControllerLogs(tmp_path)
    assert logs.refusal() == ""
    with log.open("a") as f:
        f.write("INFO cycle: leader\n")
    assert logs.refusal() == ""
    with log.open("a") as f:
        f.write("WARNING ignoring invalid dynamic config (synchronous_mode is not available)\n")
    assert "not available" in logs.refusal()


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from postgres_ras.verify.plot import write_png

    rec = failover_recording()
    path = tmp_path / "t.png"
    write_png(rec, check(rec), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
