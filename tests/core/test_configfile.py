"""The shared config-file machinery: YAML positions, schema explanations, $env, error format."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from fedquery.configfile import (
    Schema,
    config_error,
    did_you_mean,
    dotted,
    env_value,
    read_yaml,
)
from fedquery.errors import ConfigError

#: A throwaway schema in the project's style: strict objects, described properties, $defs.
SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "port"],
    "properties": {
        "name": {"description": "the service name", "$ref": "#/$defs/name"},
        "port": {"description": "the TCP port", "type": "integer", "minimum": 1,
                 "maximum": 65535},
        "mode": {"description": "plain or secure", "enum": ["plain", "secure"]},
        "token": {"description": "a token hash, or {$env: NAME}",
                  "oneOf": [{"$ref": "#/$defs/hex"}, {"$ref": "#/$defs/env"}]},
        "peers": {"description": "peer name to address", "type": "object", "minProperties": 1,
                  "additionalProperties": {"description": "an address", "type": "string"}},
    },
    "$defs": {
        "name": {"description": "a lowercase name", "type": "string", "pattern": "^[a-z]+$"},
        "hex": {"description": "64 hex characters", "type": "string",
                "pattern": "^[0-9a-f]{64}$"},
        "env": {"description": "{$env: NAME}", "type": "object", "additionalProperties": False,
                "required": ["$env"],
                "properties": {"$env": {"description": "a variable name", "type": "string",
                                        "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}}},
    },
}


@pytest.fixture
def schema(tmp_path) -> Schema:
    (tmp_path / "tiny.schema.json").write_text(json.dumps(SCHEMA), encoding="utf-8")
    return Schema(tmp_path, "tiny.schema.json")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "service.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def failure(tmp_path: Path, schema: Schema, text: str, **kwargs) -> ConfigError:
    """What a loader built on the module raises for ``text``."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        data, root = read_yaml(path, "service", **kwargs)
        if problems := schema.problems(data):
            raise config_error(path, root, problems, **kwargs)
    return caught.value


def test_valid_file_has_no_problems(tmp_path, schema):
    data, root = read_yaml(write(tmp_path, "name: db\nport: 5432\n"), "service")
    assert data == {"name": "db", "port": 5432} and root is not None
    assert schema.problems(data) == []


def test_schema_text_and_packaged_schema(tmp_path, schema):
    assert json.loads(schema.text()) == SCHEMA
    policy = Schema("fedquery.policy", "policy.schema.json")
    assert json.loads(policy.text())["title"].startswith("fedquery site policy")
    assert policy.problems([]) == [((), "expected a mapping, got a list of 0")]


# -- YAML ----------------------------------------------------------------------------------------

def test_syntax_error_has_line_and_column(tmp_path, schema):
    error = failure(tmp_path, schema, "name: db\nport: [1\n")
    path = tmp_path / "service.yaml"
    assert str(error).startswith(f"{path}:3:1: YAML syntax error: expected ',' or ']'")
    assert "(while parsing a flow sequence at line 2, column 7)" in str(error)
    assert error.path == str(path)
    unlocated = failure(tmp_path, schema, "name: db\nport: [1\n", located=False)
    assert str(unlocated).startswith(f"{path}: line 3, column 1: YAML syntax error: ")


def test_unreadable_file_names_what_it_is(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read the service file: "):
        read_yaml(tmp_path / "missing.yaml", "service")
    (tmp_path / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigError, match="cannot read the service file: it is not UTF-8"):
        read_yaml(tmp_path / "latin1.yaml", "service")


def test_what_yaml_accepts_silently_is_refused(tmp_path, schema):
    message = str(failure(tmp_path, schema, "name: a\nname: b\n1: x\nmode: yes\nport: .inf\n"))
    assert ":2:1: name: duplicate key 'name'" in message
    assert ":3:1: 1: the key '1' must be text" in message
    assert ":4:1: mode: yes reads as a boolean: write true or false" in message
    assert ":5:1: port: expected a finite number, got .inf or .nan" in message


def test_empty_file_is_none(tmp_path, schema):
    assert read_yaml(write(tmp_path, ""), "service") == (None, None)
    error = failure(tmp_path, schema, "")
    assert str(error).endswith(":1:1: (top level): expected a mapping, got nothing")
    assert error.key is None


# -- schema explanations -------------------------------------------------------------------------

def test_unknown_key_suggests_the_closest(tmp_path, schema):
    error = failure(tmp_path, schema, "name: db\nport: 1\npeers: {a: x}\nprot: 2\n")
    assert str(error).endswith(":4:1: prot: unknown key 'prot'; did you mean 'port'? "
                               "(allowed here: name, port, mode, token, peers)")
    assert error.key == "prot"


def test_missing_required_key_gives_its_description(tmp_path, schema):
    error = failure(tmp_path, schema, "port: 1\n")
    assert str(error).endswith(":1:1: name: missing required key 'name': the service name")


def test_wrong_type_never_echoes_the_value(tmp_path, schema):
    message = str(failure(tmp_path, schema, "name: db\nport: hunter2\n"))
    assert message.endswith(":2:1: port: expected a whole number >= 1 and <= 65535, got text")
    assert "hunter2" not in message


def test_text_where_env_is_accepted_is_never_echoed(tmp_path, schema):
    message = str(failure(tmp_path, schema, "name: db\nport: 1\ntoken: my-clear-token\n"))
    assert "token: the value does not match: expected 64 hex characters" in message
    assert "my-clear-token" not in message
    message = str(failure(tmp_path, schema, "name: Db\nport: 1\ntoken: {$env: 1X}\n"))
    assert "name: 'Db' is not valid: expected a lowercase name" in message  # not a secret
    assert "token.$env: '1X' is not valid: expected a variable name" in message


def test_values_limits_and_choices(tmp_path, schema):
    message = str(failure(tmp_path, schema, "name: db\nport: 0\nmode: secur\npeers: {}\n"))
    assert "port: expected a whole number >= 1 and <= 65535, got 0" in message
    assert "mode: expected one of 'plain', 'secure', got 'secur'; did you mean 'secure'?" \
        in message
    assert "peers: expected peer name to address; got none" in message


def test_one_of_names_every_branch_when_none_fits(tmp_path, schema):
    message = str(failure(tmp_path, schema, "name: db\nport: 1\ntoken: [a]\n"))
    assert "token: expected 64 hex characters or {$env: NAME}, got a list" in message


def test_every_problem_one_per_line_sorted_by_position(tmp_path, schema):
    text = """\
    mode: fast
    port: many
    peers:
      a: 1
    """
    error = failure(tmp_path, schema, text)
    lines = str(error).splitlines()
    path = tmp_path / "service.yaml"
    assert [line.split(": ", 2)[0] for line in lines] == [
        f"{path}:1:1", f"{path}:1:1", f"{path}:2:1", f"{path}:4:3"]
    assert [line.split(": ", 2)[1] for line in lines] == ["mode", "name", "port", "peers.a"]
    assert error.key == "mode" and error.path == str(path)


def test_unlocated_format(tmp_path, schema):
    error = failure(tmp_path, schema, "name: db\nport: x\nmod: plain\n", located=False)
    path = tmp_path / "service.yaml"
    assert str(error).splitlines() == [
        f"{path}: port: expected a whole number >= 1 and <= 65535, got text",
        f"{path}: mod: unknown key 'mod'; did you mean 'mode'? (allowed here: name, port, "
        "mode, token, peers)"]


def test_explain_can_be_reworded_by_a_subclass(tmp_path):
    (tmp_path / "tiny.schema.json").write_text(json.dumps(SCHEMA), encoding="utf-8")

    class Terse(Schema):
        def explain(self, error):
            if error.validator == "required":
                return [((name,), "needed") for name in error.validator_value
                        if name not in error.instance]
            return super().explain(error)

    assert Terse(tmp_path, "tiny.schema.json").problems({"name": "db", "port": "x"}) == [
        (("port",), "expected a whole number >= 1 and <= 65535, got text")]
    assert Terse(tmp_path, "tiny.schema.json").problems({}) == [
        (("name",), "needed"), (("port",), "needed")]


# -- $env, reporting -----------------------------------------------------------------------------

def test_env_value(monkeypatch):
    monkeypatch.setenv("FQ_CONFIGFILE_SET", "s3cret")
    monkeypatch.setenv("FQ_CONFIGFILE_EMPTY", "")
    monkeypatch.delenv("FQ_CONFIGFILE_UNSET", raising=False)
    assert env_value("plain", ("a",)) == "plain"
    assert env_value({"$env": "FQ_CONFIGFILE_SET"}, ("a",)) == "s3cret"
    for name in ("FQ_CONFIGFILE_UNSET", "FQ_CONFIGFILE_EMPTY"):
        at, message = env_value({"$env": name}, ("a", "b"))
        assert at == ("a", "b")
        assert message.startswith(f"environment variable {name} is not set (or empty)")


def test_config_error_locates_missing_keys_at_their_nearest_ancestor(tmp_path):
    path = write(tmp_path, "a:\n  b: 1\nlist: [x, y]\n")
    _, root = read_yaml(path, "service")
    error = config_error(path, root, [(("a", "c", "d"), "gone"), (("list", 1), "bad"),
                                      (("list", 1), "bad")])
    assert str(error).splitlines() == [f"{path}:1:1: a.c.d: gone", f"{path}:3:11: list[1]: bad"]
    assert error.key == "a.c.d"


def test_helpers():
    assert did_you_mean("sitte", ["site", "tables"]) == "; did you mean 'site'?"
    assert did_you_mean("zzz", ["site"]) == ""
    assert dotted(("a", 0, "b")) == "a[0].b" and dotted(()) == "(top level)"
