"""The course's grader, an instructor tool kept apart from the student package ``course_utils``.

Modules, by concern:

- ``markers``: exercise markers, student versions (release), restoring locked cells;
- ``contract`` and ``exercises/``: what each exercise grades, on which cases, against what;
- ``probe``: the only part that runs inside a submission's kernel;
- ``sandbox`` and ``execution``: limits, isolation, running the kernel;
- ``tamper``: static scan of the cells a student wrote;
- ``verdict``: one submission's points; ``batch``: a whole class; ``reports``: tables, gradebook,
  feedback, class report; ``cli``: ``python -m course_grader release|grade|merge``.

docs/teaching.md is the manual; docs/design.md says how it fits the course.
"""
