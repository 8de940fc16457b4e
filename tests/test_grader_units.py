"""Unit tests of the grader's parts that need no notebook run: contract, visible checks,
tampering scan, late penalty, table round trip and shard merge, sandbox modes and limits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import nbformat
import numpy as np
import pytest

from course_grader import markers
from course_grader.batch import parse_shard, shard_students
from course_grader.contract import Case, ExerciseSpec, close_to, decode, encode, equal_to
from course_grader.exercises import all_specs, get_spec
from docs.site.launch import is_colab_cell
from course_grader.reports import LatePolicy, csv_bytes, exercise_columns, merge_csvs, read_csv, read_timestamps
from course_grader.sandbox import Limits, bwrap_works, choose_mode, interpreter_reachable_by_others
from course_grader.tamper import names_used, scan_cell
from course_grader.verdict import ExerciseResult, NotebookGrade
from course_utils import checks

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- contract
def test_plain_data_survives_json_exactly():
    value = {"a": np.array([[0.1, -2.5e-300], [np.inf, 3.0]]), "b": [1, "x", np.array([True, False])], "c": 0.1}
    back = decode(json.loads(json.dumps(encode(value))))
    np.testing.assert_array_equal(back["a"], value["a"])
    assert back["b"][0] == 1 and back["b"][1] == "x" and back["b"][2].dtype == bool and back["c"] == 0.1
    with pytest.raises(TypeError, match="cannot send"):
        encode(object())


def test_close_to_says_expected_found_and_hint():
    compare = close_to(atol=1e-6, hint="the hint")
    case = Case("a case", ())
    assert compare(case, np.array([1.0, 2.0]), np.array([1.0, 2.0])) is None
    message = compare(case, np.array([1.0, 2.0]), np.array([1.0, 3.0]))
    assert "a case: expected [1.0, 2.0], found [1.0, 3.0]." in message and "Hint: the hint" in message
    assert "shape (2,)" in compare(case, np.array([1.0, 2.0]), np.array([1.0]))
    assert compare(case, 1.0, float("nan")) is not None, "NaN never passes"


def test_every_declared_exercise_passes_its_own_reference_on_fresh_seeds():
    for seed in (0, 1):
        for grade_id, spec in all_specs().items():
            for case in spec.draw(np.random.default_rng(seed)):
                expected = spec.expected(case)
                found = decode(json.loads(json.dumps(encode(expected))))  # as it comes back from a kernel
                assert spec.compare(case, expected, found) is None, (grade_id, case.name)


def test_graded_cases_change_with_the_seed():
    spec = get_spec("ex-threshold-for-fpr")
    first = spec.draw(np.random.default_rng(1))[0].args[0]
    again = spec.draw(np.random.default_rng(1))[0].args[0]
    other = spec.draw(np.random.default_rng(2))[0].args[0]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


# --------------------------------------------------------------------------- visible checks
def test_check_exercise_never_raises_and_falls_back_to_the_reference(capsys):
    def stub(x):
        raise NotImplementedError()

    assert checks.check_exercise("ex-double", stub) is get_spec("ex-double").reference
    out = capsys.readouterr().out
    assert "not solved yet, 0 points" in out and "reference implementation of `double`" in out

    wrong = checks.check_exercise("ex-double", lambda x: 3 * x)
    out = capsys.readouterr().out
    assert wrong is get_spec("ex-double").reference
    assert "visible cases are wrong" in out and "expected" in out and "Hint:" in out

    for odd in (None, "text", lambda: 1, lambda x: object()):
        checks.check_exercise("ex-double", odd)  # never raises
    assert "could not run" in (checks.check_exercise("ex-no-such", None) or "") or \
        "could not run" in capsys.readouterr().out

    right = checks.check_exercise("ex-double", lambda x: 2 * x)
    assert "✓ ex-double" in capsys.readouterr().out
    np.testing.assert_array_equal(right(np.arange(3)), [0, 2, 4])


def test_under_nbgrader_autograde_a_failing_check_raises(monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    with pytest.raises(AssertionError, match="ex-double"):
        checks.check_exercise("ex-double", lambda x: 3 * x)
    checks.check_exercise("ex-double", lambda x: 2 * x)


def test_a_checked_function_that_fails_later_answers_with_the_reference(capsys):
    def fragile(x):
        if np.asarray(x).size > 100:
            raise MemoryError("too big")
        return 2 * np.asarray(x)

    use = checks.check_exercise("ex-double", fragile)
    np.testing.assert_array_equal(use(np.ones(200)), 2 * np.ones(200))
    assert "this and later cells use the course's reference" in capsys.readouterr().out


def test_value_exercises_return_the_value():
    from course_grader import contract

    spec = ExerciseSpec(grade_id="ex-test-choice", answer="choice", draw=lambda rng: [Case("your choice")],
                        reference="png", kind="value", compare=equal_to(normalise=str.lower))
    contract.register(spec)
    assert checks.check_exercise("ex-test-choice", lambda: "PNG") == "PNG"
    assert checks.check_exercise("ex-test-choice", lambda: "webp") == "png"

    def stub():
        raise NotImplementedError()

    assert checks.check_exercise("ex-test-choice", stub) == "png"


# --------------------------------------------------------------------------- tampering scan
TAMPERING = {
    "rebinding a name the check cells use": "checks = None",
    "replacing a function of course_utils.checks": "import course_utils.checks\ncourse_utils.checks.check_exercise = print",
    "replacing it through an alias": "from course_utils import checks as c\nc.check_exercise = print",
    "an input transformer": "get_ipython().input_transformers_post.append(lambda lines: lines)",
    "an AST transformer": "ip = get_ipython()\nip.ast_transformers.append(None)",
    "a custom exception handler": "get_ipython().set_custom_exc((Exception,), print)",
    "sys.exit": "import sys\nsys.exit()",
    "os._exit": "import os\nos._exit(1)",
    "os._exit imported by name": "from os import _exit\n_exit(0)",
    "exit()": "exit()",
    "exec": "exec('pass')",
    "__import__": "__import__('os')",
    "a magic": "%load_ext autoreload",
    "a shell command": "!ls",
    "globals by key": "globals()['checks'] = 1",
    "builtins": "import builtins\nbuiltins.print = None",
    "signal": "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)",
    "the grader": "import course_grader.probe",
    "sys.modules": "import sys\nsys.modules['course_utils.checks'] = None",
    "setattr": "setattr(checks, 'check_exercise', print)",
}


@pytest.mark.parametrize("what", TAMPERING)
def test_tampering_is_found(what):
    findings = scan_cell(4, TAMPERING[what], {"checks", "auroc_fn"})
    assert findings and all(f.cell == 4 for f in findings), what
    assert findings[0].describe().startswith("cell 5 ")


def test_honest_cells_are_not_tampering():
    honest = ("%matplotlib inline\n%time x = 1\nimport numpy as np\nfrom scipy.stats import rankdata\n"
              "import math, sys, os\nfrom IPython.display import display\n"
              "def f(s, l):\n    r = rankdata(s)\n    print('✓ all done', os.path.join('a', 'b'), sys.version)\n"
              "    return float(r.mean())\nwhile False:\n    pass\nx = {}\nx['a'] = 1\n")
    assert scan_cell(0, honest, {"checks"}) == []
    assert scan_cell(0, "def f(:\n", {"checks"}) == [], "a syntax error is not tampering"


def test_no_course_cell_counts_as_tampering():
    """Every code cell of every source notebook, scanned as if a student had written it."""
    for path in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        locked = [c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
        answers = {get_spec(e.grade_id).answer for e in markers.find_exercises(json.loads(path.read_text()))}
        protected = names_used(locked) - answers
        for index, cell in enumerate(nb.cells):
            # the Colab setup cell installs the course with subprocess, which the scan rightly flags in student
            # code; the grader trusts the course's own version of every cell and scans only changed ones
            if cell.cell_type == "code" and not cell.metadata.get("nbgrader", {}).get("grade") and not is_colab_cell(cell):
                assert scan_cell(index, cell.source, protected) == [], (path.name, index)


# --------------------------------------------------------------------------- late penalty, tables, shards
def _grade(student: str, points: float, notebook: str = "nb.ipynb") -> NotebookGrade:
    message = "" if points == 2 else "1 of 2 hidden cases failed (1 of 2 points): x"
    return NotebookGrade(student, notebook, [ExerciseResult("ex-a", 2.0, points, message)],
                         notes=[f"ex-a: {message}"] if message else [])


def test_late_policy_counts_started_days_and_caps():
    due = datetime(2026, 12, 1, 23, 59, tzinfo=timezone.utc)
    policy = LatePolicy(due, percent_per_day=10, max_percent=25, grace_minutes=5)
    for submitted, days, penalty in (("2026-12-01T23:00", 0, 0), ("2026-12-02T00:03", 0, 0),
                                     ("2026-12-02T00:05", 1, 10), ("2026-12-03T00:05", 2, 20),
                                     ("2026-12-09T00:00", 7, 25)):
        grade = _grade("a", 2.0)
        policy.apply(grade, datetime.fromisoformat(submitted).replace(tzinfo=timezone.utc))
        assert (grade.late_days, grade.penalty_percent) == (days, penalty), submitted
        assert grade.total == pytest.approx(2.0 * (1 - penalty / 100))
    with pytest.raises(ValueError, match="percentages"):
        LatePolicy(due, percent_per_day=150)


def test_lms_timestamps_are_read_with_clear_errors(tmp_path):
    good = tmp_path / "lms.csv"
    good.write_text("student,submitted_at\nalice,2026-12-02T10:00:00Z\nbob,2026-12-01 12:00\n", encoding="utf-8")
    times = read_timestamps(good)
    assert times[("alice", "")] == datetime(2026, 12, 2, 10, tzinfo=timezone.utc)
    bad = tmp_path / "bad.csv"
    bad.write_text("student,submitted_at\nalice,yesterday\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.csv, line 2: 'yesterday' is not a time"):
        read_timestamps(bad)
    (tmp_path / "cols.csv").write_text("name,time\n", encoding="utf-8")
    with pytest.raises(ValueError, match="needs the columns student and submitted_at"):
        read_timestamps(tmp_path / "cols.csv")


def test_table_round_trip_and_shard_merge(tmp_path):
    points = {"nb.ipynb": [("ex-a", 2.0)]}
    columns = exercise_columns(points)
    late = _grade("carol", 1.0)
    LatePolicy(datetime(2026, 1, 1, tzinfo=timezone.utc), 10).apply(late, datetime(2026, 1, 2, 1, tzinfo=timezone.utc))
    (tmp_path / "a.csv").write_bytes(csv_bytes([_grade("alice", 2.0), late], columns))
    (tmp_path / "b.csv").write_bytes(csv_bytes([_grade("bob", 0.0)], columns))
    back = read_csv(tmp_path / "a.csv", points)
    assert [(g.student, g.raw_total, g.total, g.late_days) for g in back] == [("alice", 2, 2, 0), ("carol", 1, 0.8, 2)]
    assert back[1].exercises[0].failed_cases == ["x"]
    merged = merge_csvs([tmp_path / "b.csv", tmp_path / "a.csv"], points)
    assert [g.student for g in merged] == ["alice", "bob", "carol"]
    with pytest.raises(ValueError, match="shards must not overlap"):
        merge_csvs([tmp_path / "a.csv", tmp_path / "a.csv"], points)
    with pytest.raises(ValueError, match="not those of these source notebooks"):
        read_csv(tmp_path / "a.csv", {"nb.ipynb": [("ex-b", 2.0)]})


def test_shards_split_the_class_without_overlap():
    students = [f"s{i:02d}" for i in range(23)]
    shards = [shard_students(students[::-1], k, 4) for k in range(1, 5)]
    assert sorted(sum(shards, [])) == students and all(5 <= len(s) <= 6 for s in shards)
    assert parse_shard("3/8") == (3, 8)
    for bad in ("0/3", "4/3", "x", "1-3"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


# --------------------------------------------------------------------------- sandbox modes and limits
def _launch(mode: str, work: Path, code: str, limits: Limits = Limits(), hide: tuple = (),
            command: list[str] | None = None) -> subprocess.CompletedProcess:
    """The launcher around a plain Python command (or ``command``) instead of a kernel."""
    argv = [sys.executable, "-m", "course_grader.sandbox", "--mode", mode, "--work-dir", str(work),
            "--limits", json.dumps(limits.__dict__)]
    for path in hide:
        argv += ["--hide", str(path)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(argv + ["--", *(command or [sys.executable, "-c", code])], capture_output=True, text=True,
                          timeout=120, env=env)


def test_limits_stop_a_memory_hog_and_big_files(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    run = _launch("none", work, "import numpy as np\ntry:\n    np.ones(2**31)\nexcept MemoryError:\n    print('no memory')",
                  Limits(memory_mb=1024))
    assert "no memory" in run.stdout, run.stderr
    run = _launch("none", work, "open('big', 'wb').write(b'x' * 3 * 2**20)", Limits(file_mb=1))
    assert run.returncode != 0 and (work / "big").stat().st_size <= 2**20


@pytest.mark.skipif(not bwrap_works(), reason="bubblewrap is not installed or cannot create namespaces here")
def test_bwrap_mode_hides_sources_and_keeps_writes_in_the_grading_folder(tmp_path):
    work, secret = tmp_path / "work", tmp_path / "secret"
    work.mkdir()
    secret.mkdir()
    (secret / "solution.ipynb").write_text("SOLUTION", encoding="utf-8")
    (tmp_path / "other.ipynb").write_text("OTHER", encoding="utf-8")
    code = ("import os, pathlib\n"
            f"print(sorted(os.listdir({str(secret)!r})))\n"
            f"try:\n    print(repr(open({str(tmp_path / 'other.ipynb')!r}).read()))\nexcept OSError:\n    print('denied')\n"
            "pathlib.Path('mine.txt').write_text('ok')\n"
            f"try:\n    open({str(REPO / 'escaped.txt')!r}, 'w')\nexcept OSError as e:\n    print('read-only', e.errno)\n")
    run = _launch("bwrap", work, code, hide=(secret, tmp_path / "other.ipynb"))
    lines = run.stdout.splitlines()
    assert lines[0] == "[]", run.stderr
    assert lines[1] in ("''", "denied")
    assert lines[2].startswith("read-only") and not (REPO / "escaped.txt").exists()
    assert (work / "mine.txt").read_text() == "ok"


@pytest.mark.skipif(os.geteuid() != 0, reason="the 'user' mode needs root to switch to 'nobody'")
def test_user_mode_runs_as_nobody(tmp_path):
    """The command is a shell (this machine's Python lives under /root, which 'nobody' cannot enter)."""
    work = tmp_path / "work"
    work.mkdir()
    private = tmp_path / "private.txt"
    private.write_text("secret", encoding="utf-8")
    private.chmod(0o600)
    script = f"id -u; cat {private} 2>/dev/null || echo denied; echo ok > mine.txt; touch {tmp_path}/outside || true"
    run = _launch("user", work, "", command=["/bin/sh", "-c", script])
    assert run.stdout.split() == ["65534", "denied"], run.stderr
    assert (work / "mine.txt").read_text().strip() == "ok" and not (tmp_path / "outside").exists()


def test_mode_none_warns_once(capsys):
    from course_grader import sandbox

    sandbox._warned.discard("none")
    with pytest.warns(UserWarning, match="grading without isolation"):
        assert choose_mode("none") == "none"
    choose_mode("none")
    assert capsys.readouterr().err.count("grading without isolation") == 1
    with pytest.raises(ValueError, match="unknown sandbox mode"):
        choose_mode("docker")


def test_an_answer_that_passes_only_trivial_cases_gets_nothing():
    """`return 0.5` passes "all scores equal" of the AUROC exercise, and earns no points for it."""
    from course_grader.execution import Probe
    from course_grader.verdict import _judge, draw_cases

    spec = get_spec("ex-auroc-from-ranks")
    cases = draw_cases(spec, seed=3, student="someone")
    assert any(case.trivial for case in cases)

    def judged(answer) -> ExerciseResult:
        records = [{"status": "ok", "output": spec.run(answer, case)} for case in cases]
        result = ExerciseResult(spec.grade_id, 2.0)
        _judge(result, spec, cases, Probe(spec.grade_id, 0, cases=lambda: "", n_cases=len(cases), records=records))
        return result

    assert judged(lambda s, l: 0.5).points == 0
    assert judged(spec.reference).points == 2.0
    reversed_ranks = judged(lambda s, l: 1 - spec.reference(s, l))  # right only where AUROC is 0.5
    assert reversed_ranks.points == 0 and reversed_ranks.outcome == "wrong"
    no_ties = judged(lambda s, l: spec.reference(np.argsort(np.argsort(s, kind="stable")), l))  # ordinal ranks
    assert 0 < no_ties.points < 2.0 and any("tie" in name or "equal" in name for name in no_ties.failed_cases)
