"""Results files that bad input cannot damage: checked whole before anything is touched, locked while
a run writes, one set of run settings per file, every line validated (issue 17)."""

import json
import os
import threading

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

from tts.cli import cli
from tts.results import ResultsWriter, read_records


def run(script, out, *extra, limit="3"):
    result = CliRunner().invoke(cli, ["run", "--backend", "scripted", "--model", script, "--limit", limit,
                                      "--out", str(out), "--strategy", "single", *extra])
    return result.exit_code, result.output


def one_line_error(code, output, *needles):
    lines = output.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), output
    for needle in needles:
        assert needle in lines[0], output


@pytest.fixture
def done(script, tmp_path):
    """A results file of 3 problems written by a real run."""
    out = tmp_path / "r.jsonl"
    assert run(script, out)[0] == 0
    return out


@pytest.mark.parametrize("content", [b"a,b,c\n1,2,3\n4,5", b"\x89PNG\r\n\x1a\n\x00\x00binary", b'{"question": "1+1", "answer": "2"}\n{"question": "2+2"',
                                     b"[1, 2]\n", b"null\n{}\n"])
def test_a_file_that_is_not_a_results_file_is_refused_and_left_as_it_is(script, tmp_path, content):
    out = tmp_path / "other.jsonl"
    out.write_bytes(content)
    one_line_error(*run(script, out), str(out))
    assert out.read_bytes() == content


def test_the_dataset_itself_as_out_is_refused(script, tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text('{"question": "What is 1 + 1?", "answer": "2"}\n{"question": "What is 2 + 2?", "answer": "4"}\n')
    before = data.read_bytes()
    one_line_error(*run(script, data, "--dataset", str(data)), "not a tts results record")
    assert data.read_bytes() == before


def test_a_refused_rerun_does_not_repair_the_tail(script, done):
    with open(done, "ab") as fh:
        fh.write(b'{"id": "add1-0003", "strat')  # what a killed run leaves
    before = done.read_bytes()
    one_line_error(*run(script, done, "--seed", "7"), "other settings", "seed")
    assert done.read_bytes() == before
    code, _ = run(script, done, limit="4")  # the same settings: accepted, the fragment goes, one more problem
    assert code == 0
    records = read_records(done)
    assert sorted(r["id"] for r in records) == ["add1-0000", "add1-0001", "add1-0002", "add1-0003"]


def test_a_complete_last_record_without_its_newline_is_kept(script, done):
    data = done.read_bytes()
    done.write_bytes(data[:-1])  # the newline of the last record lost
    code, output = run(script, done)
    assert code == 0 and "3 results already there" in output
    assert done.read_bytes() == data


def test_other_run_settings_are_refused_whatever_the_strategy(script, done):
    before = done.read_bytes()
    for extra in (["--strategy", "majority", "--seed", "3"], ["--strategy", "majority", "--dataset", "add2"],
                  ["--budget-tokens", "50"], ["--strategy", "majority", "--model", script + "x"]):
        code, output = run(script, done, *extra)
        assert code == 2 and output.count("\n") == 1, output
        assert done.read_bytes() == before
    code, _ = run(script, done, "--strategy", "majority")  # another strategy, same run settings: fine
    assert code == 0
    assert {r["strategy"] for r in read_records(done)} == {"single", "majority"}


def test_hand_edited_and_duplicated_records_are_errors_not_results(script, done, tmp_path):
    lines = done.read_bytes().splitlines(keepends=True)
    record = json.loads(lines[0])
    record["correct"] = not record["correct"]
    edited = tmp_path / "edited.jsonl"
    edited.write_bytes(json.dumps(record).encode() + b"\n" + b"".join(lines[1:]))
    before = edited.read_bytes()
    one_line_error(*run(script, edited), "edited.jsonl:1", "digest")
    assert edited.read_bytes() == before
    report = CliRunner().invoke(cli, ["report", str(edited)])
    assert report.exit_code == 2 and "edited.jsonl:1" in report.output and "digest" in report.output
    doubled = tmp_path / "doubled.jsonl"
    doubled.write_bytes(b"".join(lines) + lines[0])
    one_line_error(*run(script, doubled), "doubled.jsonl:4", "repeats")


def test_a_second_writer_is_refused_with_the_holder(script, done):
    before = done.read_bytes()
    with ResultsWriter(done, {}):
        code, output = run(script, done, limit="5")
    one_line_error(code, output, "being written by another tts run", f"pid {os.getpid()}")
    assert done.read_bytes() == before
    assert run(script, done, limit="5")[0] == 0  # the lock went with its writer


def test_two_runs_at_once_write_every_problem_once(script, tmp_path):
    out = tmp_path / "r.jsonl"
    codes = []
    threads = [threading.Thread(target=lambda: codes.append(run(script, out, limit="6")[0])) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 0 in codes and set(codes) <= {0, 2}
    ids = [r["id"] for r in read_records(out)]
    assert len(ids) == len(set(ids)) == 6


@pytest.mark.parametrize("kind", ["fifo", "device", "directory", "dangling"])
def test_non_regular_paths_are_refused_at_once(script, tmp_path, kind):
    path = tmp_path / "x.jsonl"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "dangling":
        path.symlink_to(tmp_path / "nowhere")
    else:
        path = "/dev/zero"
    one_line_error(*run(script, path))  # as --out
    if kind in ("fifo", "device"):
        one_line_error(*run(script, tmp_path / "o.jsonl", "--dataset", str(path)))
        report = CliRunner().invoke(cli, ["report", str(path)])
        assert report.exit_code == 2 and "not a regular" in report.output


def test_an_unwritable_out_is_refused_before_the_run(script, tmp_path):
    if os.geteuid() == 0:
        target = "/proc/version"  # root may write anywhere else; this file refuses even root
        one_line_error(*run(script, target))
    else:
        locked = tmp_path / "ro"
        locked.mkdir()
        locked.chmod(0o500)
        one_line_error(*run(script, locked / "r.jsonl"))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """(script, bytes of a real 3-problem results file), made once so every example damages the same file."""
    folder = tmp_path_factory.mktemp("pristine")
    script = folder / "script.json"
    script.write_text(json.dumps({"Reply with just the number": ["9", "The answer is 8.", "9"]}))
    out = folder / "r.jsonl"
    assert run(str(script), out)[0] == 0
    return str(script), out.read_bytes()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_damage_to_a_results_file_is_refused_or_resumed_never_made_worse(pristine, tmp_path_factory, data):
    """Property: cut, flip, insert or drop bytes anywhere in a real results file; a rerun either resumes
    (every problem exactly once afterwards, all lines valid) or exits 2 with one line leaving the file
    byte for byte as it was."""
    script, good = pristine
    out = tmp_path_factory.mktemp("fuzz") / "r.jsonl"
    action = data.draw(st.sampled_from(["cut", "flip", "insert", "drop"]))
    at = data.draw(st.integers(0, len(good) - 1))
    if action == "cut":
        damaged = good[:at]
    elif action == "flip":
        damaged = good[:at] + bytes([good[at] ^ data.draw(st.integers(1, 255))]) + good[at + 1:]
    elif action == "insert":
        damaged = good[:at] + data.draw(st.binary(min_size=1, max_size=20)) + good[at:]
    else:
        damaged = good[:at] + good[at + data.draw(st.integers(1, 40)):]
    out.write_bytes(damaged)
    code, output = run(script, out)
    if code == 2:
        assert output.strip().count("\n") == 0 and "Traceback" not in output
        assert out.read_bytes() == damaged
    else:
        assert code == 0, output
        ids = [r["id"] for r in read_records(out)]
        assert sorted(ids) == ["add1-0000", "add1-0001", "add1-0002"]
