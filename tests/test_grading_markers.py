import pytest

from course_utils import grading

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
