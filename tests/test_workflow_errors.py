"""Every kind of workflow error names the file, line and column of the offending node, says
what is wrong and how to fix it; every problem of a file is reported together."""

from __future__ import annotations

import pytest

from openintent import OpenIntentError, SpecError
from openintent.workflow import (
    WorkflowNotFoundError,
    WorkflowSpec,
    WorkflowValidationError,
    load_workflow,
    validate_workflow,
)

HEAD = 'openintent: "1.0"\ninfo: {name: t}\n'


def problems_of(text: str | bytes) -> list[tuple[int, int, str]]:
    with pytest.raises(WorkflowValidationError) as caught:
        WorkflowSpec.from_string(text, "w.yaml")
    error = caught.value
    assert str(error) == "\n".join(
        f"w.yaml:{p.line}:{p.column}: {p.message}" for p in error.problems)
    return [(p.line, p.column, p.message) for p in error.problems]


def only_problem(text: str | bytes) -> tuple[int, int, str]:
    [problem] = problems_of(text)
    return problem


@pytest.mark.parametrize(
    ("text", "line", "column", "fragments"),
    [
        pytest.param(HEAD + "workflow:\n  a:\n    assign: x\n    depnds_on: [b]\n", 6, 5,
                     ["unknown key 'depnds_on' in step 'a'", "did you mean `depends_on`?"],
                     id="misspelled-key"),
        pytest.param('openintent: "1.0"\ninfo:\n  description: d\nworkflow:\n  a: {assign: x}\n',
                     3, 3, ["Missing workflow name", "under info:"], id="missing-name"),
        pytest.param(HEAD, 1, 1, ["Missing 'workflow' section"], id="missing-workflow"),
        pytest.param('openintent: "1.0"\ninfo: {name: null}\nworkflow:\n  a: {assign: x}\n', 2, 14,
                     ["info.name must be a non-empty string, got nothing"], id="null-name"),
        pytest.param(HEAD + "workflow:\n", 3, 1, ["Missing 'workflow' section"],
                     id="empty-workflow"),
        pytest.param('openintent: "1.0"\ninfo:\nworkflow:\n  a: {assign: x}\n', 2, 1,
                     ["Missing workflow name"], id="empty-info"),
        pytest.param('info: {name: t}\nworkflow:\n  a: {assign: x}\n', 1, 1,
                     ['add openintent: "1.0"'], id="missing-format-version"),
        pytest.param('openintent: "2.0"\ninfo: {name: t}\nworkflow:\n  a: {assign: x}\n', 1, 13,
                     ["unsupported format version '2.0'"], id="unsupported-version"),
        pytest.param(HEAD + "workflow:\n  a:\n    assign: x\n    timeout: soon\n", 6, 14,
                     ["timeout must be a positive number", "the string 'soon'"],
                     id="wrong-type"),
        pytest.param(HEAD + "workflow:\n  a:\n    assign: {x: 1}\n", 5, 13,
                     ["assign must be a string or a list of strings"], id="wrong-type-assign"),
        pytest.param(HEAD + "workflow:\n  write: {assign: x}\n  edit:\n    assign: x\n"
                     "    depends_on: [wirte]\n", 7, 18,
                     ["depends on 'wirte'", "did you mean `write`?"], id="unknown-dependency"),
        pytest.param(HEAD + "workflow:\n  write:\n    assign: x\n    depends_on: [edit]\n"
                     "  edit:\n    assign: x\n    depends_on: [write]\n", 6, 18,
                     ["Circular dependency: write -> edit -> write"], id="cycle"),
        pytest.param(HEAD + "workflow:\n  w:\n    assign: x\n    depends_on: w\n", 6, 17,
                     ["Circular dependency", "w -> w"], id="self-dependency"),
        pytest.param(HEAD + "workflow:\n  a: {assign: x}\n  a: {assign: y}\n", 5, 3,
                     ["duplicate key 'a' (first at line 4, column 3)"], id="duplicate-key"),
        pytest.param(HEAD + "workflow:\n  a: {assign: x, title: T}\n  b: {assign: x, title: T}\n",
                     5, 3, ["share the title 'T'"], id="duplicate-title"),
        pytest.param(HEAD + "workflow:\n\ta: {assign: x}\n", 4, 1,
                     ["a tab is used for indentation", "spaces"], id="tab"),
        pytest.param(HEAD + "workflow:\n  a: [unclosed\n", 5, 1, ["invalid YAML"],
                     id="invalid-yaml"),
        pytest.param(HEAD + "---\nb: 1\n", 3, 1, ["invalid YAML", "single document"],
                     id="two-documents"),
        pytest.param(b'openintent: "1.0"\ninfo: {name: \xff}\n', 2, 14,
                     ["byte 0xff is not valid UTF-8"], id="not-utf8"),
        pytest.param("", 1, 1, ["the file is empty"], id="empty"),
        pytest.param("# only a comment\n", 1, 1, ["the file is empty"], id="only-comments"),
        pytest.param("- a\n- b\n", 1, 1, ["must be a mapping", "got a list"], id="not-a-mapping"),
        pytest.param(HEAD + "workflow:\n  a: !!python/object/apply:os.system ['echo hi']\n", 4, 6,
                     ["the tag !!python/object/apply:os.system is not allowed"], id="python-tag"),
        pytest.param('openintent: "1.0"\ninfo: {name: t}\ncoordinator:\n  id: c\n'
                     "  strategy: sequental\nworkflow:\n  a: {assign: x}\n", 5, 13,
                     ["unknown strategy 'sequental'", "did you mean `sequential`?"],
                     id="unknown-strategy"),
        pytest.param('openintent: "1.0"\ninfo: {name: t}\ncoordinator:\n  id: c\n  guardrails:\n'
                     "    - type: budjet\n      max_cost_usd: 1\nworkflow:\n  a: {assign: x}\n",
                     6, 13, ["unknown guardrail type 'budjet'"], id="unknown-guardrail"),
        pytest.param('openintent: "1.0"\ninfo: {name: t}\ncoordinator:\n  id: c\n  guardrails:\n'
                     "    - type: budget\n      max_cost: 1\nworkflow:\n  a: {assign: x}\n",
                     7, 7, ["'max_cost'", "max_cost_usd"], id="guardrail-field"),
        pytest.param('openintent: "1.0"\ninfo: {name: t}\ncoordinator:\n  id: c\n  guardrails:\n'
                     "    - type: approval\n      require_for: [pubish]\nworkflow:\n"
                     "  publish: {assign: x}\n", 7, 21,
                     ["require_for names 'pubish'", "did you mean `publish`?"],
                     id="approval-unknown-step"),
        pytest.param(HEAD + "workflow:\n  write: {assign: x, outputs: {text: string}}\n"
                     "  edit:\n    assign: x\n    inputs: {draft: write.text}\n", 7, 21,
                     ["'write' is not in its depends_on"], id="input-not-a-dependency"),
        pytest.param(HEAD + "workflow:\n  write: {assign: x, outputs: {text: string}}\n"
                     "  edit:\n    assign: x\n    depends_on: [write]\n"
                     "    inputs: {draft: write.txt}\n", 8, 21,
                     ["declares no output 'txt'", "did you mean `text`?"],
                     id="input-unknown-output"),
        pytest.param(HEAD + "workflow:\n  write: {assign: x, outputs: {text: strng}}\n", 4, 38,
                     ["unknown type 'strng'", "did you mean `string`?"], id="output-type"),
        pytest.param(HEAD + "workflow:\n  write: {assign: x, retry: {max_attempts: 0}}\n", 4, 29,
                     ["retry", "max_attempts must be an int >= 1"], id="bad-retry"),
        pytest.param(HEAD + "workflow:\n  a: {assign: x, initial_state: [1]}\n", 4, 33,
                     ["initial_state must be a mapping"], id="bad-initial-state"),
    ],
)
def test_each_error_kind_is_reported_at_its_line_and_column(text, line, column, fragments):
    got_line, got_column, message = only_problem(text)
    assert (got_line, got_column) == (line, column), message
    for fragment in fragments:
        assert fragment in message


def test_all_problems_of_a_file_are_reported_together_in_file_order():
    text = HEAD + "workflow:\n  a:\n    asign: x\n    timeout: -1\n  b: {depends_on: [zz]}\n"
    problems = problems_of(text)
    assert [(line, column) for line, column, _ in problems] == [(5, 5), (6, 14), (7, 20)]
    assert "did you mean `assign`?" in problems[0][1 + 1]
    assert "depends on 'zz'" in problems[2][2]


def test_a_missing_file_is_workflow_not_found(tmp_path):
    with pytest.raises(WorkflowNotFoundError, match="nope.yaml"):
        load_workflow(tmp_path / "nope.yaml")
    with pytest.raises(FileNotFoundError):
        validate_workflow(tmp_path / "nope.yaml")


def test_the_errors_belong_to_the_library_hierarchy():
    assert issubclass(WorkflowValidationError, SpecError)
    assert issubclass(WorkflowNotFoundError, OpenIntentError)


def test_a_file_names_itself_in_its_problems(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(HEAD)
    with pytest.raises(WorkflowValidationError) as caught:
        load_workflow(path)
    assert str(caught.value).startswith(f"{path}:1:1: Missing 'workflow' section")
    assert caught.value.problems[0].file == str(path)


def test_warnings_for_unused_agents_and_0_17_keys(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text(HEAD + "llm: {provider: openai}\nagents:\n  idle: does nothing\n"
                    "workflow:\n  a: {assign: idel, description: d}\n")
    assert validate_workflow(path) == [
        f"{path}:3:1: the top level: 'llm' (an openintent 0.17 key) is ignored by this version",
        f"{path}:5:3: agent 'idle' is declared but no step uses it",
        f"{path}:7:15: step 'a' is assigned to 'idel', which is not declared under agents: "
        "(did you mean `idle`?)",
    ]
