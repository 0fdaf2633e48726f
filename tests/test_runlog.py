"""The run-log schema: the writer checks records against it; one reader, strict or lenient."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from autolr.errors import LogFormatError, LogWarning, SchemaError
from autolr.offline.reader import read_records, read_run_log
from autolr.runlog import (
    ENVELOPE,
    PROBE,
    READ_VERSIONS,
    RECORD_TYPES,
    ROLLBACK,
    RUN_START,
    SCHEMA,
    SCHEMA_VERSION,
    STAGE_START,
    RunLog,
    fields_of,
    of_type,
    required_fields,
)

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "runlogs").glob("*.jsonl"))
START = {"config": {"min_lr": 1e-3, "max_lr": 1.0}, "initial_lrs": [0.1]}


def start_fields() -> dict:
    return {**START, "forecaster": {"name": "exponential"}, "prober": None, "strategy": None}


def test_every_field_is_documented_once() -> None:
    for type_, cls in SCHEMA.items():
        assert cls.TYPE == type_
        doc = cls.__doc__ or ""
        assert doc.startswith(f"``{type_}``"), type_
        parts = re.split(r"^        (\w+): ", doc.split("Attributes:", 1)[1], flags=re.M)[1:]
        docs = {name: " ".join(text.split()) for name, text in zip(parts[::2], parts[1::2])}
        assert list(docs) == list(fields_of(type_)), type_
        for f in dataclasses.fields(cls):
            added = "(added within version 1)" in docs[f.name]
            assert bool(f.metadata.get("added")) == added, (type_, f.name)
            # A field added within version 1 is in every version-2 log; one new in a
            # later version says which.
            new = re.search(r"\(new in version (\d+)\)", docs[f.name])
            want = 2 if added else int(new.group(1)) if new else 0
            assert f.metadata.get("since", 0) == want, (type_, f.name)


def test_write_checks_fields(tmp_path: Path) -> None:
    log = RunLog(tmp_path / "run.jsonl")
    rec = log.write(RUN_START, 0, **start_fields())
    assert rec["type"] == RUN_START and rec["schema_version"] == SCHEMA_VERSION
    with pytest.raises(
        SchemaError, match=r"run_start record written with missing fields \['prober'\]"
    ):
        log.write(RUN_START, 0, **START, forecaster=None, strategy=None)
    with pytest.raises(SchemaError, match=r"unknown fields \['extra'\]"):
        log.write(RUN_START, 0, **start_fields(), extra=1)
    with pytest.raises(SchemaError, match="unknown run-log record type 'stage_begin'"):
        log.write("stage_begin", 0)
    with pytest.raises(SchemaError, match="unknown run-log record type"):
        log.of_type("probes")
    assert len(read_run_log(log.path)) == 1 and log.of_type(RUN_START) == log.records


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_fixtures_have_exactly_the_schema_fields(path: Path) -> None:
    # The fixtures were written before run_start.strategy was added.
    records = read_run_log(path, strict=False)
    assert records[0]["type"] == RUN_START
    for rec in records:
        fields = set(rec) - set(ENVELOPE)
        need = required_fields(rec["type"], rec["schema_version"])
        assert set(need) <= fields <= set(fields_of(rec["type"]))
    assert of_type(records, PROBE)


def test_strict_and_lenient_reads(tmp_path: Path) -> None:
    good = json.dumps({"type": RUN_START, "schema_version": 1, "step": 0, **START})
    path = tmp_path / "old.jsonl"
    # An older log: run_start without the fields added later, a truncated last line.
    path.write_text(good + "\n" + '{"type": "probe", "sch')
    with pytest.raises(LogFormatError, match="line 1: run_start record is missing the field"):
        read_records(path)
    with pytest.warns(LogWarning, match="line 2: truncated last line skipped"):
        read = read_records(path, strict=False)
    assert read.lines == [1] and len(read.warnings) == 1
    full = json.dumps(
        {"type": RUN_START, "schema_version": 1, "step": 0, "time": 0.0, **start_fields()}
    )
    mystery = json.dumps({"type": "mystery", "schema_version": 1, "step": 0})
    path.write_text(full + "\n" + mystery)
    with pytest.warns(LogWarning, match="record of unknown type 'mystery' skipped"):
        assert len(read_run_log(path, strict=False)) == 1
    with pytest.raises(
        LogFormatError, match=r"line 2: record of unknown type 'mystery' \(strict read\)"
    ):
        read_run_log(path)


def test_required_fields_are_a_subset() -> None:
    for type_ in RECORD_TYPES:
        assert set(required_fields(type_)) <= set(fields_of(type_))
    assert "recent" not in required_fields("stage_start")


def test_version_4_is_written_and_versions_1_to_4_are_read(tmp_path: Path) -> None:
    assert SCHEMA_VERSION == 4 and READ_VERSIONS == (1, 2, 3, 4)
    assert required_fields(RUN_START, 2) == fields_of(RUN_START)
    # stage_start.level is new in version 3: both readers take version-2 logs without it.
    assert "level" not in required_fields(STAGE_START, 2)
    assert required_fields(STAGE_START, 3) == fields_of(STAGE_START)
    # rollback.back_to is new in version 4.
    assert "back_to" not in required_fields(ROLLBACK, 3)
    assert required_fields(ROLLBACK, 4) == fields_of(ROLLBACK)
    old = {"type": RUN_START, "schema_version": 1, "step": 0, "time": 0.0, **START}
    path = tmp_path / "v1.jsonl"
    # A version-1 run_start without the fields added within version 1: the lenient
    # reader takes it (a log an older autolr wrote).
    path.write_text(json.dumps(old) + "\n")
    assert read_run_log(path, strict=False)[0]["schema_version"] == 1
    # The same record as version 2 is a flaw for both readers: version 2 has every field.
    path.write_text(json.dumps({**old, "schema_version": 2}) + "\n")
    for strict in (True, False):
        with pytest.raises(LogFormatError, match="line 1: run_start record is missing the field"):
            read_run_log(path, strict=strict)
    path.write_text(json.dumps({**old, **start_fields(), "schema_version": 2}) + "\n")
    assert read_run_log(path)[0]["prober"] is None
    path.write_text(json.dumps({**old, **start_fields(), "schema_version": 5}) + "\n")
    with pytest.raises(LogFormatError, match=r"schema_version=5 is not supported.* 1, 2, 3, 4 \("):
        read_run_log(path, strict=False)
    path.write_text(json.dumps({**old, **start_fields(), "schema_version": True}) + "\n")
    with pytest.raises(LogFormatError, match="schema_version=True is not supported"):
        read_run_log(path)
