"""Every documented mode runs offline: ``offline.by_config`` lets a config value choose another
bundled cassette (with its own config and clock); a replay miss on a bundled cassette never
says to re-record it against the live API; cassettes/README.md lists every cassette."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from engine.errors import EXIT_INVALID_MAPPING, EXIT_USAGE, MappingError, UsageError
from engine.lang.functions import to_epoch_ms
from engine.pipeline.compile import compile_file
from engine.pipeline.run import replay_settings
from tests.conftest import CASSETTES, MAPPINGS, SNAPSHOTS
from tests.graphtools import read_output, snapshot_of

NOWSECURE = MAPPINGS / "nowsecure.yaml"
BUNDLED_MISS = (
    "the bundled cassette has no response for this request: it was recorded with other config or --base-url; "
    "check --config, or use --cassette FILE --record-mode once to record your own"
)
OWN_MISS = "the cassette holds no response for this request (replay only); re-record it with --record-mode all"


# ----------------------------------------------------------------------------------------
# NowSecure's findingsMode=latest, from its own bundled cassette


def test_latest_mode_replays_its_own_cassette_offline(etl, tmp_path):
    result = etl("run", NOWSECURE, "--offline", "--config", "findingsMode=latest", "--output", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    output = read_output(tmp_path / "out")
    # The same graph as the test that replays the cassette by name, with its config and clock.
    expected = json.loads((SNAPSHOTS / "nowsecure" / "latest-report.json").read_text())
    assert snapshot_of(output) == expected
    statuses = {s["id"]: s["status"] for s in output["summary"]["integrationStepResults"]}
    assert statuses["fetch-findings"] == "disabled" and statuses["fetch-latest-findings"] == "success"


def test_the_environment_chooses_the_cassette_as_it_chooses_the_mode(etl, tmp_path):
    result = etl("run", NOWSECURE, "--offline", "--output", tmp_path / "out", env={"NOWSECURE_FINDINGS_MODE": "latest"})
    assert result.exit_code == 0, result.stderr
    expected = json.loads((SNAPSHOTS / "nowsecure" / "latest-report.json").read_text())
    assert snapshot_of(read_output(tmp_path / "out")) == expected


def test_the_default_mode_still_replays_the_full_run(etl, tmp_path):
    result = etl("run", NOWSECURE, "--offline", "--output", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    expected = json.loads((SNAPSHOTS / "nowsecure" / "full-run.json").read_text())
    assert snapshot_of(read_output(tmp_path / "out")) == expected


def test_nowsecure_names_each_mode_cassette():
    plan = compile_file(NOWSECURE)
    assert plan.offline is not None
    assert plan.offline.cassettes == {
        (CASSETTES / "nowsecure" / "full-run.yaml").resolve(),
        (CASSETTES / "nowsecure" / "latest-report.yaml").resolve(),
    }
    latest = replay_settings(plan, None, None, True, {"findingsMode": "latest"})
    assert latest.cassette == (CASSETTES / "nowsecure" / "latest-report.yaml").resolve()
    assert latest.as_of == "2026-11-23T09:00:00Z" and latest.bundled
    assert latest.defaults == dict(plan.offline.config)  # recorded with the same config


# ----------------------------------------------------------------------------------------
# The cassette-miss hint


def test_a_bundled_cassette_miss_does_not_say_re_record(etl, tmp_path):
    result = etl("run", NOWSECURE, "--offline", "--base-url", "http://127.0.0.1:9", "--output", tmp_path / "out")
    assert result.exit_code == 5
    assert BUNDLED_MISS in result.stderr
    assert "re-record" not in result.stderr


def test_a_bundled_cassette_named_with_cassette_is_still_bundled(etl, tmp_path):
    cassette = CASSETTES / "nowsecure" / "latest-report.yaml"
    result = etl("run", NOWSECURE, "--cassette", cassette, "--base-url", "http://127.0.0.1:9", "--output", tmp_path)
    assert result.exit_code == 5
    assert BUNDLED_MISS in result.stderr


def test_a_cassette_of_ones_own_may_be_re_recorded(etl, tmp_path):
    own = tmp_path / "mine.yaml"
    shutil.copy(CASSETTES / "nowsecure" / "full-run.yaml", own)
    result = etl("run", NOWSECURE, "--cassette", own, "--base-url", "http://127.0.0.1:9", "--output", tmp_path / "o")
    assert result.exit_code == 5
    assert OWN_MISS in result.stderr
    assert "bundled" not in result.stderr


# ----------------------------------------------------------------------------------------
# by_config in general: the cassette, config and clock a config value chooses

MAPPING = """\
version: 1
integration: {id: modes, name: Modes}
config:
  mode: {choices: [one, two, three], default: one}
  label: {default: unset}
  verbose: {type: boolean, default: false}
  apiToken: {secret: true, required: false}
sources:
  api: {base_url: "https://api.example.com"}
offline:
  cassette: one.yaml
  as_of: "2024-01-01T00:00:00Z"
  config: {label: recorded-one}
  by_config:
    mode:
      two:
        cassette: two.yaml
        as_of: "2025-06-01T00:00:00Z"
        config: {label: recorded-two}
      three:
        cassette: three.yaml
    verbose:
      true:
        cassette: verbose.yaml
steps:
  - id: build-thing
    name: Build the thing
    entities:
      - resource: Thing
        type: modes_thing
        class: Record
        key: "modes_thing:{{ config.label }}"
        properties:
          name: {template: "{{ config.label }}"}
          clock: {template: "{{ now }}"}
"""
EMPTY_CASSETTE = "interactions: []\nversion: 1\n"


@pytest.fixture
def modes(tmp_path) -> Path:
    for name in ("one", "two", "three", "verbose"):
        (tmp_path / f"{name}.yaml").write_text(EMPTY_CASSETTE)
    path = tmp_path / "modes.yaml"
    path.write_text(MAPPING)
    return path


def settings(path: Path, **config):
    return replay_settings(compile_file(path), None, None, True, {k: str(v) for k, v in config.items()})


def test_a_config_value_chooses_its_cassette_config_and_clock(modes):
    base = settings(modes)
    assert (base.cassette.name, base.defaults, base.as_of) == (
        "one.yaml",
        {"label": "recorded-one"},
        "2024-01-01T00:00:00Z",
    )
    two = settings(modes, mode="two")
    assert (two.cassette.name, two.defaults, two.as_of) == (
        "two.yaml",
        {"label": "recorded-two"},
        "2025-06-01T00:00:00Z",
    )
    # A choice without config or as_of keeps the section's.
    three = settings(modes, mode="three")
    assert (three.cassette.name, three.defaults, three.as_of) == ("three.yaml", {"label": "recorded-one"}, base.as_of)
    # A boolean field chooses by its converted value ("yes" is true).
    assert settings(modes, verbose="yes").cassette.name == "verbose.yaml"
    assert all(s.bundled for s in (base, two, three))


def test_two_choices_at_once_are_a_usage_error(modes):
    with pytest.raises(UsageError) as info:
        settings(modes, mode="two", verbose="true")
    assert info.value.exit_code == EXIT_USAGE
    message = str(info.value)
    assert message.startswith("--offline: 2 bundled cassettes fit this run's config")
    assert "mode=two chooses" in message and "two.yaml" in message
    assert "verbose=true chooses" in message and "verbose.yaml" in message
    assert "pass --cassette with the one to replay" in message
    # --cassette decides, as the message says, and brings the config and clock of its choice.
    picked = replay_settings(
        compile_file(modes), modes.parent / "two.yaml", None, True, {"mode": "two", "verbose": "1"}
    )
    assert (picked.cassette.name, picked.defaults["label"], picked.as_of) == (
        "two.yaml",
        "recorded-two",
        "2025-06-01T00:00:00Z",
    )
    assert picked.bundled


def test_an_offline_run_uses_the_chosen_config_and_clock(etl, modes, tmp_path):
    def thing(*extra) -> dict:
        result = etl("run", modes, "--offline", "--output", tmp_path / "out", *extra)
        assert result.exit_code == 0, result.stderr
        (entity,) = read_output(tmp_path / "out")["entities"]
        return entity

    assert (thing()["name"], thing()["clock"]) == ("recorded-one", to_epoch_ms("2024-01-01T00:00:00Z"))
    two = thing("--config", "mode=two")
    assert (two["name"], two["clock"]) == ("recorded-two", to_epoch_ms("2025-06-01T00:00:00Z"))
    # --as-of and --config still win over what the cassette was recorded with.
    pinned = thing("--config", "mode=two", "--as-of", "2020-01-01T00:00:00Z", "--config", "label=mine")
    assert (pinned["name"], pinned["clock"]) == ("mine", to_epoch_ms("2020-01-01T00:00:00Z"))


def test_an_invalid_choosing_value_is_the_usual_config_error(etl, modes, tmp_path):
    result = etl("run", modes, "--offline", "--config", "mode=four", "--output", tmp_path / "out")
    assert result.exit_code == 4
    assert "config field 'mode' must be one of one, two, three; --config mode gives 'four'" in result.stderr


def test_recording_offline_writes_the_chosen_cassette(tmp_path):
    repository = tmp_path / "repo"
    (repository / ".git").mkdir(parents=True)
    mapping = repository / "modes.yaml"
    mapping.write_text(MAPPING)
    chosen = replay_settings(compile_file(mapping), None, "once", True, {"mode": "two"})
    assert (chosen.cassette, chosen.mode) == ((repository / "two.yaml").resolve(), "once")
    outside = MAPPING.replace("cassette: two.yaml", "cassette: ../../two.yaml")
    mapping.write_text(outside)
    with pytest.raises(UsageError, match="outside the mapping's repository"):
        replay_settings(compile_file(mapping), None, "once", True, {"mode": "two"})


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        pytest.param(
            "    mode:\n      two:",
            "    mdoe:\n      two:",
            "FILE:15:5: offline.by_config.mdoe: unknown config field 'mdoe' (did you mean 'mode'?)",
            id="unknown-field",
        ),
        pytest.param(
            "    verbose:\n      true:",
            "    apiToken:\n      x:",
            "FILE:22:5: offline.by_config.apiToken: config field 'apiToken' is secret; a secret cannot choose a "
            "cassette",
            id="secret-field",
        ),
        pytest.param(
            "      three:",
            "      four:",
            "FILE:20:7: offline.by_config.mode.four: 'four' is not one of the choices of config field 'mode' "
            "(one, two, three)",
            id="not-a-choice",
        ),
        pytest.param(
            "      true:\n        cassette: verbose.yaml",
            "      maybe:\n        cassette: verbose.yaml",
            "FILE:23:7: offline.by_config.verbose.maybe: 'maybe' is not a value of config field 'verbose': it is of "
            "type boolean",
            id="wrong-type",
        ),
        pytest.param(
            "config: {label: recorded-two}",
            "config: {lable: recorded-two}",
            "FILE:19:18: offline.by_config.mode.two.config.lable: unknown config field 'lable' (did you mean 'label'?)",
            id="choice-config-unknown-field",
        ),
        pytest.param(
            'as_of: "2025-06-01T00:00:00Z"',
            'as_of: "next tuesday"',
            "FILE:18:16: offline.by_config.mode.two.as_of: cannot read a date from 'next tuesday'",
            id="choice-as-of",
        ),
    ],
)
def test_by_config_problems_are_located(tmp_path, before, after, expected):
    assert MAPPING.count(before) == 1
    path = tmp_path / "modes.yaml"
    path.write_text(MAPPING.replace(before, after))
    with pytest.raises(MappingError) as info:
        compile_file(path)
    assert info.value.exit_code == EXIT_INVALID_MAPPING
    problems = [str(p).replace(str(path), "FILE") for p in info.value.problems]
    assert problems == [expected]


def test_the_schema_refuses_a_choice_without_a_cassette(etl, tmp_path):
    path = tmp_path / "modes.yaml"
    path.write_text(MAPPING.replace("      three:\n        cassette: three.yaml\n", "      three: {}\n"))
    result = etl("validate", path)
    assert result.exit_code == EXIT_INVALID_MAPPING
    assert "offline.by_config.mode.three" in result.stderr and "cassette" in result.stderr


# ----------------------------------------------------------------------------------------
# cassettes/README.md


def test_the_cassette_readme_lists_every_cassette():
    readme = (CASSETTES / "README.md").read_text()
    listed = set(re.findall(r"^\| `([^`]+\.yaml)` \|", readme, flags=re.MULTILINE))
    on_disk = {path.relative_to(CASSETTES).as_posix() for path in CASSETTES.rglob("*.yaml")}
    assert on_disk == listed


def test_every_bundled_cassette_a_mapping_names_exists():
    for mapping in MAPPINGS.rglob("*.yaml"):
        offline = compile_file(mapping).offline
        if offline is not None:
            missing = [str(c) for c in offline.cassettes if not c.exists()]
            assert missing == [], f"{mapping} names missing cassettes"
