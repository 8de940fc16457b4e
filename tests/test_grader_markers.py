import pytest

from course_grader import markers as grading
from course_grader.batch import find_submissions
from course_grader.execution import error_message

SOLUTION = '''def f(x):
    """Doc."""
    ### BEGIN SOLUTION
    y = x + 1
    return y
    ### END SOLUTION
'''


def test_stub_keeps_indentation_and_removes_answer():
    stub = grading.stub_solutions(SOLUTION)
    assert "x + 1" not in stub
    assert "    # YOUR CODE HERE\n    raise NotImplementedError()\n" in stub
    namespace = {}
    exec(stub, namespace)
    with pytest.raises(NotImplementedError):
        namespace["f"](1)


def test_unbalanced_markers_raise_rather_than_leak():
    with pytest.raises(ValueError, match="unbalanced"):
        grading.stub_solutions("### BEGIN SOLUTION\nsecret = 1\n")
    with pytest.raises(ValueError, match="unbalanced"):
        grading.remove_hidden_tests("check()\n### BEGIN HIDDEN TESTS\nhidden()\n")


def test_hidden_tests_removed():
    source = "check(f)\n### BEGIN HIDDEN TESTS\ncheck(f, hidden=True)\n### END HIDDEN TESTS\n"
    assert grading.remove_hidden_tests(source) == "check(f)\n"


def _cell(source, **nbgrader):
    return {"cell_type": "code", "source": source, "metadata": {"nbgrader": nbgrader} if nbgrader else {}}


def test_find_exercises_pairs_solution_and_check():
    nb = {"cells": [
        _cell("x = 1"),
        _cell(SOLUTION, grade_id="ex-a", solution=True, grade=False),
        _cell("check()", grade_id="ex-a-check", grade=True, locked=True, points=2),
    ]}
    (exercise,) = grading.find_exercises(nb)
    assert exercise == grading.Exercise("ex-a", 2.0, 1, 2)


def test_find_exercises_rejects_missing_check_and_duplicates():
    with pytest.raises(ValueError, match="no check cell"):
        grading.find_exercises({"cells": [_cell(SOLUTION, grade_id="ex-a", solution=True)]})
    with pytest.raises(ValueError, match="used by cells"):
        grading.find_exercises({"cells": [_cell(SOLUTION, grade_id="ex-a", solution=True),
                                          _cell(SOLUTION, grade_id="ex-a", solution=True)]})


# --------------------------------------------------------------------------- source checks, student versions, restoring
def _notebook(*cells):
    return {"cells": list(cells), "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


CHECK = "check(f)\n### BEGIN HIDDEN TESTS\ncheck(f, hidden=True)\n### END HIDDEN TESTS\n"


def _source():
    return _notebook(
        dict(_cell("x = 1"), id="setup", outputs=[], execution_count=None),
        dict(_cell(SOLUTION, grade_id="ex-a", solution=True), id="answer", outputs=[], execution_count=None),
        dict(_cell(CHECK, grade_id="ex-a-check", grade=True, locked=True, points=2), id="check",
             outputs=[{"output_type": "stream", "name": "stdout", "text": "ok\n"}], execution_count=3),
        dict(_cell("print(f(1))"), id="after", outputs=[], execution_count=None),
    )


def test_student_version_is_pure_and_locks_cells():
    source = _source()
    student = grading.student_version(source)
    assert source == _source(), "the source notebook is not modified"
    assert grading.student_version(source) == student
    cells = student["cells"]
    assert cells[0]["id"] == grading.INSTRUCTIONS_CELL_ID and cells[0]["cell_type"] == "markdown"
    assert [c["id"] for c in cells[1:]] == ["setup", "answer", "check", "after"]
    assert "x + 1" not in cells[2]["source"] and "raise NotImplementedError()" in cells[2]["source"]
    assert cells[3]["source"] == "check(f)\n" and cells[3]["outputs"] == [] and cells[3]["execution_count"] is None
    assert cells[3]["metadata"]["editable"] is False and cells[3]["metadata"]["deletable"] is False
    assert cells[2]["metadata"]["deletable"] is False and "editable" not in cells[2]["metadata"]
    assert grading.notebook_bytes(student) == grading.notebook_bytes(grading.student_version(source))


@pytest.mark.parametrize("change,message", [
    (lambda cells: cells[0].__setitem__("source", "### BEGIN SOLUTION\nx = 1\n### END SOLUTION\n"),
     "without nbgrader `solution: true`"),
    (lambda cells: cells[3].__setitem__("source", CHECK), "hidden tests belong in a check cell"),
    (lambda cells: cells[2]["metadata"]["nbgrader"].pop("grade_id"), "without nbgrader `grade_id`"),
    (lambda cells: cells[1].__setitem__("source", SOLUTION + "### END SOLUTION\n"), "unbalanced"),
    (lambda cells: cells.pop(2), "no check cell"),
    (lambda cells: cells.append({"cell_type": "markdown", "metadata": {}, "source": "### BEGIN SOLUTION\n"
                                 "secret\n### END SOLUTION"}), "markdown cell"),
])
def test_refused_source_notebooks(change, message):
    source = _source()
    change(source["cells"])
    with pytest.raises(ValueError, match=message):
        grading.student_version(source, "nb.ipynb")


def test_a_marker_out_of_order_is_refused_rather_than_leaked():
    source = _source()
    source["cells"][1]["source"] = "### END SOLUTION\nsecret = 1\n### BEGIN SOLUTION\n"
    with pytest.raises(ValueError, match="leak"):
        grading.student_version(source)


def _ids(notebook):
    return [(c.get("metadata", {}).get("nbgrader", {}).get("grade_id"), c["source"]) for c in notebook["cells"]]


def test_restore_puts_back_edited_and_deleted_locked_cells_with_hidden_tests():
    source = _source()
    student = grading.student_version(source)
    untouched, notes = grading.restore_locked_cells(source, student)
    assert notes == [] and untouched["cells"][3]["source"] == CHECK  # hidden tests are back

    edited = grading.student_version(source)
    edited["cells"][3]["source"] = "pass"
    restored, notes = grading.restore_locked_cells(source, edited)
    assert restored["cells"][3]["source"] == CHECK and notes == [
        "the locked cell `ex-a-check` had been edited; it was restored from the original"]

    deleted = grading.student_version(source)
    del deleted["cells"][3]
    deleted["cells"].insert(1, {"cell_type": "code", "metadata": {}, "source": "y = 2", "outputs": [],
                                "execution_count": None, "id": "check"})  # reuses the deleted cell's id
    restored, notes = grading.restore_locked_cells(source, deleted)
    assert [gid for gid, _ in _ids(restored)] == [None, None, None, "ex-a", "ex-a-check", None]
    assert restored["cells"][4]["source"] == CHECK and "had been deleted" in notes[0]
    assert len({c["id"] for c in restored["cells"]}) == len(restored["cells"]), "cell ids stay unique"


def test_restore_without_the_answer_cell_and_with_copies():
    source = _source()
    student = grading.student_version(source)
    del student["cells"][2]  # the answer cell
    del student["cells"][2]  # and the check cell
    restored, _ = grading.restore_locked_cells(source, student)
    assert [gid for gid, _ in _ids(restored)] == [None, None, "ex-a-check", None]

    copied = grading.student_version(source)
    copied["cells"].append(dict(copied["cells"][2], id="copy", source="def f(x):\n    return 0\n"))
    restored, notes = grading.restore_locked_cells(source, copied)
    assert [gid for gid, _ in _ids(restored)].count("ex-a") == 1 and "copied cell" in notes[0]


def test_restore_drops_outputs_and_cell_tags():
    source = _source()
    student = grading.student_version(source)
    student["cells"][2]["metadata"]["tags"] = ["skip-execution"]
    student["cells"][2]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "fake ✓\n"}]
    restored, _ = grading.restore_locked_cells(source, student)
    assert restored["cells"][2]["outputs"] == [] and "tags" not in restored["cells"][2]["metadata"]
    with pytest.raises(ValueError, match="no list of cells"):
        grading.restore_locked_cells(source, {"cells": 5})


def test_error_messages_for_feedback():
    traceback = ["\x1b[0;31m-----\x1b[0m", "Cell \x1b[0;32mIn[3], line 2\x1b[0m", "\x1b[0;31mRuntimeError\x1b[0m: boom"]
    assert error_message("RuntimeError", "boom", traceback) == "RuntimeError: boom"
    assert error_message("KeyError", "'a'", []) == "KeyError: 'a'"


def test_find_submissions_layout(tmp_path):
    (tmp_path / "alice").mkdir()
    (tmp_path / "alice" / "nb.ipynb").write_text("{}")
    (tmp_path / "alice" / "other.ipynb").write_text("{}")
    (tmp_path / "bob" / "unzipped" / ".ipynb_checkpoints").mkdir(parents=True)
    (tmp_path / "bob" / "unzipped" / "nb.ipynb").write_text("{}")
    (tmp_path / "bob" / "unzipped" / ".ipynb_checkpoints" / "nb.ipynb").write_text("{}")
    (tmp_path / "carol").mkdir()
    (tmp_path / "loose.ipynb").write_text("{}")
    found, warnings = find_submissions(tmp_path, ["nb.ipynb"])
    assert found == {"alice": {"nb.ipynb": tmp_path / "alice" / "nb.ipynb"},
                     "bob": {"nb.ipynb": tmp_path / "bob" / "unzipped" / "nb.ipynb"}, "carol": {}}
    assert "other.ipynb" in warnings["alice"][0] and "unzipped" in warnings["bob"][0]
    assert "loose.ipynb" in warnings[""][0]
    with pytest.raises(FileNotFoundError, match="no such submissions folder"):
        find_submissions(tmp_path / "nope", ["nb.ipynb"])
