"""Broken mappings are reported as exact ``FILE:LINE:COL: path: message`` lines, exit 3.

Every case starts from ``BASE`` (a small valid mapping: one source, two steps), changes
one thing, writes the result to ``tmp_path`` and checks every problem line the engine
reports - through ``engine.pipeline.compile.compile_file`` and, for a few cases, ``etl validate``.

Lines and columns are 1-based and were counted by hand against the numbered listing of
``BASE`` below (``test_base_listing`` guards the lines the cases rely on). In expected
lines, ``FILE`` stands for the path the mapping was written to.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from engine.cli import main
from engine.errors import EXIT_INVALID_MAPPING, MappingError
from engine.pipeline.compile import compile_file
from engine.pipeline.load import MAX_DEPTH, mapping_schema

REPO = Path(__file__).resolve().parents[1]
DIGICERT = REPO / "mappings" / "digicert.yaml"

#  1 version: 1
#  2 integration:
#  3   id: acme
#  4   name: Acme
#  5 config:
#  6   apiKey:
#  7     env: ACME_API_KEY
#  8     secret: true
#  9   pageSize:
# 10     type: integer
# 11     default: 100
# 12 sources:
# 13   api:
# 14     base_url: https://api.example.com
# 15     headers:
# 16       Authorization: "Bearer {{ config.apiKey }}"
# 17     timeout: 30
# 18 steps:
# 19   - id: fetch-account
# 20     request:
# 21       path: /account
# 22     entities:
# 23       - type: acme_account
# 24         class: Account
# 25         key: "acme_account:{{ record.id }}"
# 26         properties:
# 27           name: name
# 28   - id: fetch-users
# 29     depends_on: [fetch-account]
# 30     request:
# 31       path: /users
# 32     records: users
# 33     entities:
# 34       - type: acme_user
# 35         class: User
# 36         key: "acme_user:{{ record.id }}"
# 37         properties:
# 38           name: display_name
# 39           email: email
# 40     relationships:
# 41       - class: HAS
# 42         from: {type: acme_account}
# 43         to: acme_user
# 44     mapped_relationships:
# 45       - class: IS
# 46         source: acme_user
# 47         target:
# 48           type: employee
# 49           class: Person
# 50           properties:
# 51             email: email
# 52         filter_keys: [[_class, email]]
BASE = """\
version: 1
integration:
  id: acme
  name: Acme
config:
  apiKey:
    env: ACME_API_KEY
    secret: true
  pageSize:
    type: integer
    default: 100
sources:
  api:
    base_url: https://api.example.com
    headers:
      Authorization: "Bearer {{ config.apiKey }}"
    timeout: 30
steps:
  - id: fetch-account
    request:
      path: /account
    entities:
      - type: acme_account
        class: Account
        key: "acme_account:{{ record.id }}"
        properties:
          name: name
  - id: fetch-users
    depends_on: [fetch-account]
    request:
      path: /users
    records: users
    entities:
      - type: acme_user
        class: User
        key: "acme_user:{{ record.id }}"
        properties:
          name: display_name
          email: email
    relationships:
      - class: HAS
        from: {type: acme_account}
        to: acme_user
    mapped_relationships:
      - class: IS
        source: acme_user
        target:
          type: employee
          class: Person
          properties:
            email: email
        filter_keys: [[_class, email]]
"""


# ----------------------------------------------------------------------------------------
# helpers


def mutate(old: str, new: str) -> str:
    """BASE with the one occurrence of ``old`` replaced by ``new``."""
    assert BASE.count(old) == 1, f"{old!r} occurs {BASE.count(old)} times in BASE"
    return BASE.replace(old, new)


def write(tmp_path: Path, text: str, name: str = "mapping.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problem_lines(path: Path) -> list[str]:
    """Compile ``path``; it must fail. Returns ``str(problem)`` of every problem, in order."""
    with pytest.raises(MappingError) as info:
        compile_file(path)
    error = info.value
    assert error.exit_code == EXIT_INVALID_MAPPING == 3
    lines = [str(p) for p in error.problems]
    assert str(error) == "\n".join(lines)
    return lines


def expand(lines: list[str], path: Path) -> list[str]:
    return [line.replace("FILE", str(path)) for line in lines]


# Vocabularies the engine owns; the messages' wording and positions are what is tested.
TOP_LEVEL_KEYS = ", ".join(sorted(mapping_schema()["properties"]))
RELATIONSHIP_KEYS = ", ".join(sorted(mapping_schema()["definitions"]["relationship"]["properties"]))
KNOWN_VARIABLES = "config, now, record"  # what an entity key of a step without for_each can see

DEEP_BLOCK = "".join("  " * i + f"k{i}:\n" for i in range(MAX_DEPTH + 6)) + "  " * (MAX_DEPTH + 6) + "v: 1\n"
DEEP_FLOW = "deep: " + "[" * (MAX_DEPTH + 6) + "]" * (MAX_DEPTH + 6) + "\n"

# Billion laughs: lol6 expands to 9**7 strings from a few lines of text.
ALIAS_BOMB = (
    "\n".join(
        ['lol0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
        + [f"lol{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 7)]
    )
    + "\n"
)


# ----------------------------------------------------------------------------------------
# The cases: (id, mapping text, expected problem lines)

CASES = [
    # -- YAML ---------------------------------------------------------------------------
    pytest.param(
        mutate("    timeout: 30\n", "\ttimeout: 30\n"),
        [
            "FILE:17:1: YAML syntax error: found character '\\t' that cannot start any token; "
            "YAML indents with spaces, not tabs: replace the tab with spaces"
        ],
        id="yaml-tab-indent",
    ),
    pytest.param(
        mutate("      path: /account\n", "      path: [/account\n"),
        # PyYAML fails at the ':' of "entities:" (22:13); the author's mistake is the
        # unclosed '[' on line 21, which PyYAML reports as the error's context.
        [
            "FILE:22:13: YAML syntax error: expected ',' or ']', but got ':' "
            "(while parsing a flow sequence started at line 21, column 13)"
        ],
        id="yaml-unclosed-flow-sequence",
    ),
    pytest.param(
        mutate("timeout: 30", "timeout: *nope"),
        ["FILE:17:14: YAML syntax error: found undefined alias 'nope'"],
        id="yaml-undefined-alias",
    ),
    pytest.param(
        mutate("    timeout: 30\n", "    timeout: 30\n    timeout: 60\n"),
        ["FILE:18:5: sources.api.timeout: duplicate key 'timeout' (first defined on line 17)"],
        id="duplicate-key",
    ),
    pytest.param(
        mutate("          name: display_name\n", "          name: display_name\n          name: username\n"),
        ["FILE:39:11: steps[1].entities[0].properties.name: duplicate key 'name' (first defined on line 38)"],
        id="duplicate-key-nested",
    ),
    pytest.param(
        "",
        ["FILE:1:1: the mapping file is empty"],
        id="empty-file",
    ),
    pytest.param(
        "# only a comment\n\n",
        ["FILE:1:1: the mapping file is empty"],
        id="comment-only-file",
    ),
    pytest.param(
        "- version: 1\n- steps: []\n",
        ["FILE:1:1: a mapping file must be a YAML mapping (key: value pairs) at the top level"],
        id="top-level-list",
    ),
    pytest.param(
        "just some text\n",
        ["FILE:1:1: a mapping file must be a YAML mapping (key: value pairs) at the top level"],
        id="top-level-scalar",
    ),
    pytest.param(
        # 1 + 10 + 91 + 820 + 7381 + 66430 nodes are walked before lol5; the 200001st is
        # inside lol5[1][7][8][6][5] (an alias of the lol0 list at 1:7), at its item 8: the
        # ninth "lol" of lol0, at 1:68.
        ALIAS_BOMB + BASE,
        [
            "FILE:1:68: lol5[1][7][8][6][5][8]: the document has more than 200000 nodes "
            "(an alias bomb?); refusing to load it"
        ],
        id="alias-bomb",
    ),
    pytest.param(
        # k0 is on line 53; k64 (path depth 65) on line 117, indented 128 columns.
        BASE + DEEP_BLOCK,
        [
            "FILE:117:129: "
            + ".".join(f"k{i}" for i in range(MAX_DEPTH + 1))
            + f": nesting deeper than {MAX_DEPTH} levels; refusing to load it"
        ],
        id="too-deep-block",
    ),
    pytest.param(
        # "deep: " is 6 columns; the 65th '[' (path deep[0]x64) is at column 6 + 65 = 71.
        BASE + DEEP_FLOW,
        ["FILE:53:71: deep" + "[0]" * MAX_DEPTH + f": nesting deeper than {MAX_DEPTH} levels; refusing to load it"],
        id="too-deep-flow",
    ),
    # -- schema -------------------------------------------------------------------------
    pytest.param(
        mutate("steps:\n", "stepz:\n"),
        # the did-you-mean covers the missing 'steps'; no second report
        ["FILE:18:1: stepz: unknown key 'stepz' (did you mean 'steps'?)"],
        id="unknown-top-level-key-did-you-mean",
    ),
    pytest.param(
        mutate("steps:\n", "flibbertigibbet: 1\nsteps:\n"),
        [f"FILE:18:1: flibbertigibbet: unknown key 'flibbertigibbet'; allowed keys: {TOP_LEVEL_KEYS}"],
        id="unknown-top-level-key-no-hint",
    ),
    pytest.param(
        mutate("        properties:\n          name: name\n", "        proprties:\n          name: name\n"),
        ["FILE:26:9: steps[0].entities[0].proprties: unknown key 'proprties' (did you mean 'properties'?)"],
        id="misspelt-entity-key",
    ),
    pytest.param(
        mutate("timeout: 30", "timeout: fast"),
        ['FILE:17:14: sources.api.timeout: expected number, got a string ("fast")'],
        id="wrong-type",
    ),
    pytest.param(
        mutate('        key: "acme_account:{{ record.id }}"\n', ""),
        ["FILE:23:9: steps[0].entities[0]: missing required key 'key'"],
        id="missing-required-key",
    ),
    pytest.param(
        mutate("      - class: HAS", "      - class: HSA"),
        ["FILE:41:16: steps[1].relationships[0].class: 'HSA' is not an allowed value; did you mean 'HAS'?"],
        id="enum-relationship-class",
    ),
    pytest.param(
        mutate("    records: users\n", "    pagination:\n      kind: cursr\n    records: users\n"),
        ["FILE:33:13: steps[1].pagination.kind: 'cursr' is not an allowed value; did you mean 'cursor'?"],
        id="enum-pagination-kind",
    ),
    pytest.param(
        mutate("    records: users\n", "    pagination:\n      kind: cursor\n    records: users\n"),
        ["FILE:33:7: steps[1].pagination: kind 'cursor' needs 'cursor' (JMESPath to the next token)"],
        id="pagination-kind-missing-field",
    ),
    pytest.param(
        mutate(
            "    records: users\n", "    pagination:\n      kind: page\n      total: meta.total\n    records: users\n"
        ),
        [
            "FILE:34:7: steps[1].pagination.total: 'total' is not used by kind 'page' (it uses: has_more, in, "
            "max_pages, page_param, size, size_param, start_page, stop_on_empty, total_pages)"
        ],
        id="pagination-field-of-another-kind",
    ),
    pytest.param(
        mutate("- id: fetch-users", "- id: Fetch Users"),
        ["FILE:28:9: steps[1].id: 'Fetch Users' is not valid: use lower-case letters, digits, '-' and '_'"],
        id="step-id-pattern",
    ),
    pytest.param(
        mutate("        to: acme_user\n", "        to: acme_user\n        extra: 1\n"),
        [f"FILE:44:9: steps[1].relationships[0].extra: unknown key 'extra'; allowed keys: {RELATIONSHIP_KEYS}"],
        id="unknown-relationship-key",
    ),
    pytest.param(
        mutate("timeout: 30", "timeout: fast")
        .replace("        properties:\n          name: name\n", "        proprties:\n          name: name\n")
        .replace("      - class: HAS", "      - class: HSA")
        .replace('        key: "acme_user:{{ record.id }}"\n', ""),
        [
            'FILE:17:14: sources.api.timeout: expected number, got a string ("fast")',
            "FILE:26:9: steps[0].entities[0].proprties: unknown key 'proprties' (did you mean 'properties'?)",
            "FILE:34:9: steps[1].entities[0]: missing required key 'key'",
            "FILE:40:16: steps[1].relationships[0].class: 'HSA' is not an allowed value; did you mean 'HAS'?",
        ],
        id="several-schema-problems-sorted",
    ),
    # -- JMESPath -----------------------------------------------------------------------
    pytest.param(
        # plain scalar: the value starts at column 17; the second '&&' is at offset 14.
        mutate("name: display_name", "name: first_name && && last_name"),
        ["FILE:38:31: steps[1].entities[0].properties.name: JMESPath syntax error: invalid token (at AND '&&')"],
        id="jmespath-syntax-plain",
    ),
    pytest.param(
        # single-quoted: the quote is at column 17, the text starts at 18.
        mutate("name: display_name", "name: 'first_name && && last_name'"),
        ["FILE:38:32: steps[1].entities[0].properties.name: JMESPath syntax error: invalid token (at AND '&&')"],
        id="jmespath-syntax-single-quoted",
    ),
    pytest.param(
        mutate("name: display_name", 'name: "first_name && && last_name"'),
        ["FILE:38:32: steps[1].entities[0].properties.name: JMESPath syntax error: invalid token (at AND '&&')"],
        id="jmespath-syntax-double-quoted",
    ),
    pytest.param(
        # {jmespath: "..."}: '{' at 17, the quote at 28, the text from 29; offset 14.
        mutate("name: display_name", 'name: {jmespath: "first_name && && last_name"}'),
        [
            "FILE:38:43: steps[1].entities[0].properties.name.jmespath: "
            "JMESPath syntax error: invalid token (at AND '&&')"
        ],
        id="jmespath-syntax-explicit-form",
    ),
    pytest.param(
        mutate("records: users", "records: users[?active ==]"),
        ["FILE:32:30: steps[1].records: JMESPath syntax error: invalid token (at RBRACKET ']')"],
        id="jmespath-syntax-records",
    ),
    pytest.param(
        # In YAML source the text is  join(''-'', [first_name, last_name]) c  : the 'c'
        # is at column 55, but two characters later than in the unescaped string.
        mutate("name: display_name", "name: 'join(''-'', [first_name, last_name]) c'"),
        [
            "FILE:38:55: steps[1].entities[0].properties.name: "
            "JMESPath syntax error: Unexpected token: c (at UNQUOTED_IDENTIFIER 'c')"
        ],
        id="jmespath-syntax-single-quoted-with-escapes",
    ),
    pytest.param(
        mutate("name: display_name", 'name: "\\"first name\\" c"'),
        [
            "FILE:38:33: steps[1].entities[0].properties.name: "
            "JMESPath syntax error: Unexpected token: c (at UNQUOTED_IDENTIFIER 'c')"
        ],
        id="jmespath-syntax-double-quoted-with-escapes",
    ),
    pytest.param(
        # literal block: the expression is on line 33 from column 7; ']' is at offset 16.
        mutate("records: users", "records: |-\n      users[?active ==]"),
        ["FILE:33:23: steps[1].records: JMESPath syntax error: invalid token (at RBRACKET ']')"],
        id="jmespath-syntax-block-scalar",
    ),
    pytest.param(
        # the expression ends at column 31; the error is at the end of input, column 32.
        mutate("name: display_name", "name: display_name ||"),
        ["FILE:38:32: steps[1].entities[0].properties.name: JMESPath syntax error: unexpected end of expression"],
        id="jmespath-incomplete",
    ),
    pytest.param(
        mutate("name: display_name", "name: display_name ~ x"),
        ["FILE:38:30: steps[1].entities[0].properties.name: JMESPath syntax error: Unknown token ~"],
        id="jmespath-lexer-error",
    ),
    pytest.param(
        mutate("email: email\n    relationships", "email: lowr(email)\n    relationships"),
        ["FILE:39:18: steps[1].entities[0].properties.email: unknown JMESPath function 'lowr()'"],
        id="jmespath-unknown-function",
    ),
    pytest.param(
        # 'number(' also occurs inside 'to_number(' (column 21); the call is at column 34.
        mutate("email: email\n    relationships", "email: to_number(a) || number(b)\n    relationships"),
        ["FILE:39:34: steps[1].entities[0].properties.email: unknown JMESPath function 'number()'"],
        id="jmespath-unknown-function-substring",
    ),
    pytest.param(
        mutate("name: display_name", "name: \"config('pageSze')\""),
        ["FILE:38:26: steps[1].entities[0].properties.name: unknown config field 'pageSze' (did you mean 'pageSize'?)"],
        id="jmespath-unknown-config-field",
    ),
    # -- Jinja --------------------------------------------------------------------------
    pytest.param(
        # the template text starts at column 15; the stray '}' is at offset 23.
        mutate('"acme_user:{{ record.id }}"', '"acme_user:{{ record.id }"'),
        ["FILE:36:38: steps[1].entities[0].key: Jinja syntax error: unexpected '}'"],
        id="jinja-syntax-error",
    ),
    pytest.param(
        mutate('"acme_user:{{ record.id }}"', '"acme_user:{{ recrd.id }}"'),
        ["FILE:36:28: steps[1].entities[0].key: unknown variable 'recrd' (did you mean 'record'?)"],
        id="jinja-unknown-variable",
    ),
    pytest.param(
        # 'user' also occurs in the literal text 'acme_user' (column 20).
        mutate('"acme_user:{{ record.id }}"', '"acme_user:{{ user.id }}"'),
        [f"FILE:36:28: steps[1].entities[0].key: unknown variable 'user'; known: {KNOWN_VARIABLES}"],
        id="jinja-unknown-variable-substring",
    ),
    pytest.param(
        mutate("{{ config.apiKey }}", "{{ record.apiKey }}"),
        [
            "FILE:16:33: sources.api.headers.Authorization: 'record' is not available here: templates of sources "
            "and instance tags see only config (a source's base_url, headers and params also see account)"
        ],
        id="jinja-variable-not-in-scope",
    ),
    pytest.param(
        mutate('"acme_user:{{ record.id }}"', '"acme_user:{{ parent.id }}"'),
        [
            "FILE:36:28: steps[1].entities[0].key: 'parent' is not available here: only steps with for_each "
            "(fan-out) have a parent entity"
        ],
        id="jinja-parent-outside-fan-out",
    ),
    pytest.param(
        mutate("{{ config.apiKey }}", "{{ config.apiKy }}"),
        ["FILE:16:40: sources.api.headers.Authorization: unknown config field 'apiKy' (did you mean 'apiKey'?)"],
        id="jinja-unknown-config-field",
    ),
    pytest.param(
        mutate("{{ config.apiKey }}", "{{ config['apiKy'] }}"),
        ["FILE:16:41: sources.api.headers.Authorization: unknown config field 'apiKy' (did you mean 'apiKey'?)"],
        id="jinja-unknown-config-field-subscript",
    ),
    pytest.param(
        mutate(
            "    records: users\n",
            '    pagination:\n      kind: offset\n      limit: "{{ config.pageSze }}"\n    records: users\n',
        ),
        ["FILE:34:25: steps[1].pagination.limit: unknown config field 'pageSze' (did you mean 'pageSize'?)"],
        id="pagination-limit-unknown-config-field",
    ),
    # -- config -------------------------------------------------------------------------
    pytest.param(
        mutate("    type: integer\n    default: 100", "    type: integer\n    required: true\n    default: 100"),
        ["FILE:11:15: config.pageSize.required: a field with a default cannot be required"],
        id="config-required-with-default",
    ),
    pytest.param(
        mutate("default: 100", "default: lots"),
        ["FILE:11:14: config.pageSize.default: default 'lots' is not of type integer"],
        id="config-default-wrong-type",
    ),
    pytest.param(
        mutate("steps:\n", "offline:\n  cassette: cassette.yaml\n  config:\n    pageSze: 2\nsteps:\n"),
        ["FILE:21:5: offline.config.pageSze: unknown config field 'pageSze' (did you mean 'pageSize'?)"],
        id="offline-unknown-config-field",
    ),
    # -- steps and references -----------------------------------------------------------
    pytest.param(
        mutate("depends_on: [fetch-account]", "depends_on: [fetch-account, load-groups]"),
        ["FILE:29:33: steps[1].depends_on[1]: unknown step 'load-groups'"],
        id="depends-on-unknown-step",
    ),
    pytest.param(
        mutate("depends_on: [fetch-account]", "depends_on: [fetch-account, fetch-acount]"),
        ["FILE:29:33: steps[1].depends_on[1]: unknown step 'fetch-acount' (did you mean 'fetch-account'?)"],
        id="depends-on-unknown-step-did-you-mean",
    ),
    pytest.param(
        # The only dependency is misspelt: fixing it also makes acme_account available,
        # so the second, derived report ("add it to depends_on" - it is there) is noise.
        mutate("depends_on: [fetch-account]", "depends_on: [fetch-acount]"),
        ["FILE:29:18: steps[1].depends_on[0]: unknown step 'fetch-acount' (did you mean 'fetch-account'?)"],
        id="depends-on-misspelt-only-dependency",
    ),
    pytest.param(
        mutate("    depends_on: [fetch-account]\n", ""),
        [
            "FILE:41:22: steps[1].relationships[0].from.type: 'acme_account' is built by step 'fetch-account', "
            "which this step does not depend on; add it to depends_on"
        ],
        id="relationship-endpoint-from-step-not-depended-on",
    ),
    pytest.param(
        mutate("  - id: fetch-account\n", "  - id: fetch-account\n    depends_on: [fetch-users]\n"),
        ["FILE:20:17: steps[0].depends_on: dependency cycle: fetch-account -> fetch-users -> fetch-account"],
        id="dependency-cycle",
    ),
    pytest.param(
        mutate("depends_on: [fetch-account]", "depends_on: [fetch-account, fetch-users]"),
        ["FILE:29:33: steps[1].depends_on[1]: a step cannot depend on itself"],
        id="depends-on-itself",
    ),
    pytest.param(
        mutate("  - id: fetch-users", "  - id: fetch-account"),
        [
            "FILE:28:9: steps[1].id: duplicate step id 'fetch-account' (also steps[0])",
            "FILE:29:18: steps[1].depends_on[0]: a step cannot depend on itself",
        ],
        id="duplicate-step-id",
    ),
    pytest.param(
        mutate(
            "          name: name\n",
            "          name: name\n"
            "      - type: acme_account\n"
            "        class: Account\n"
            '        key: "acme_account2:{{ record.id }}"\n'
            "        properties: {name: name}\n",
        ),
        ["FILE:28:15: steps[0].entities[1].type: entity type 'acme_account' is declared twice in this step"],
        id="duplicate-entity-type-in-step",
    ),
    pytest.param(
        # Several steps may build one type, but with one class.
        mutate(
            "          email: email\n    relationships:",
            "          email: email\n"
            "      - type: acme_account\n"
            "        class: User\n"
            '        key: "acme_account:{{ record.id }}"\n'
            "        properties: {name: name}\n"
            "    relationships:",
        ),
        [
            "FILE:40:15: steps[1].entities[1].type: entity type 'acme_account' is declared with class 'User' "
            "here but 'Account' in step 'fetch-account'"
        ],
        id="entity-type-with-two-classes",
    ),
    pytest.param(
        mutate("        to: acme_user", "        to: acme_usr"),
        [
            "FILE:43:13: steps[1].relationships[0].to: "
            "'acme_usr' is not an entity type built in this step's entities (did you mean 'acme_user'?)"
        ],
        id="relationship-endpoint-not-built-in-step",
    ),
    pytest.param(
        mutate("from: {type: acme_account}", "from: {type: acme_acount}"),
        [
            "FILE:42:22: steps[1].relationships[0].from.type: "
            "unknown entity type 'acme_acount' (did you mean 'acme_account'?)"
        ],
        id="relationship-endpoint-unknown-type",
    ),
    pytest.param(
        mutate("      path: /users\n", "      source: apii\n      path: /users\n"),
        ["FILE:31:15: steps[1].request.source: unknown source 'apii' (did you mean 'api'?)"],
        id="unknown-source",
    ),
    pytest.param(
        mutate("class: Account", "class: Certficate"),
        ["FILE:24:16: steps[0].entities[0].class: unknown JupiterOne class 'Certficate' (did you mean 'Certificate'?)"],
        id="unknown-entity-class",
    ),
    pytest.param(
        mutate("class: User", "class: [User, Persn]"),
        ["FILE:35:23: steps[1].entities[0].class[1]: unknown JupiterOne class 'Persn' (did you mean 'Person'?)"],
        id="unknown-entity-class-in-list",
    ),
    pytest.param(
        mutate("filter_keys: [[_class, email]]", "filter_keys: [[_class, emial]]"),
        [
            "FILE:52:32: steps[1].mapped_relationships[0].filter_keys[0][1]: "
            "filter key 'emial' is not a property of the target (did you mean 'email'?)"
        ],
        id="bad-filter-key",
    ),
    pytest.param(
        mutate("{{ config.apiKey }}", "{{ config.apiKy }}")
        .replace("class: Account", "class: Certficate")
        .replace("depends_on: [fetch-account]", "depends_on: [fetch-account, load-groups]")
        .replace('"acme_user:{{ record.id }}"', '"acme_user:{{ recrd.id }}"')
        .replace("filter_keys: [[_class, email]]", "filter_keys: [[_class, emial]]"),
        [
            "FILE:16:40: sources.api.headers.Authorization: unknown config field 'apiKy' (did you mean 'apiKey'?)",
            "FILE:24:16: steps[0].entities[0].class: unknown JupiterOne class 'Certficate' (did you mean 'Certificate'?)",
            "FILE:29:33: steps[1].depends_on[1]: unknown step 'load-groups'",
            "FILE:36:28: steps[1].entities[0].key: unknown variable 'recrd' (did you mean 'record'?)",
            "FILE:52:32: steps[1].mapped_relationships[0].filter_keys[0][1]: "
            "filter key 'emial' is not a property of the target (did you mean 'email'?)",
        ],
        id="several-semantic-problems-sorted",
    ),
]


# ----------------------------------------------------------------------------------------
# tests


def test_base_listing():
    """The numbered listing above matches BASE, at least where the cases look."""
    lines = BASE.splitlines()
    assert len(lines) == 52
    assert lines[15] == '      Authorization: "Bearer {{ config.apiKey }}"'
    assert lines[16] == "    timeout: 30"
    assert lines[17] == "steps:"
    assert lines[27] == "  - id: fetch-users"
    assert lines[35] == '        key: "acme_user:{{ record.id }}"'
    assert lines[37] == "          name: display_name"
    assert lines[51] == "        filter_keys: [[_class, email]]"


def test_base_mapping_is_valid(tmp_path):
    plan = compile_file(write(tmp_path, BASE))
    assert [s.id for s in plan.steps] == ["fetch-account", "fetch-users"]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_broken_mapping_is_reported_exactly(tmp_path, text, expected):
    path = write(tmp_path, text)
    assert problem_lines(path) == expand(expected, path)


# -- through the CLI ---------------------------------------------------------------------

CLI_CASES = [
    pytest.param(
        mutate("timeout: 30", "timeout: fast"),
        ['FILE:17:14: sources.api.timeout: expected number, got a string ("fast")'],
        id="schema",
    ),
    pytest.param(
        mutate("    timeout: 30\n", "    timeout: 30\n    timeout: 60\n"),
        ["FILE:18:5: sources.api.timeout: duplicate key 'timeout' (first defined on line 17)"],
        id="yaml",
    ),
    pytest.param(
        mutate("name: display_name", "name: 'first_name && && last_name'"),
        ["FILE:38:32: steps[1].entities[0].properties.name: JMESPath syntax error: invalid token (at AND '&&')"],
        id="jmespath",
    ),
    pytest.param(
        mutate('"acme_user:{{ record.id }}"', '"acme_user:{{ recrd.id }}"').replace(
            "class: Account", "class: Certficate"
        ),
        [
            "FILE:24:16: steps[0].entities[0].class: "
            "unknown JupiterOne class 'Certficate' (did you mean 'Certificate'?)",
            "FILE:36:28: steps[1].entities[0].key: unknown variable 'recrd' (did you mean 'record'?)",
        ],
        id="semantic-several",
    ),
    pytest.param("", ["FILE:1:1: the mapping file is empty"], id="empty"),
]


@pytest.mark.parametrize(("text", "expected"), CLI_CASES)
def test_cli_validate_reports_problems_and_exits_3(tmp_path, text, expected):
    path = write(tmp_path, text)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 3, result.output
    assert result.stdout == ""
    assert result.stderr.splitlines() == expand(expected, path)


def test_cli_validate_checks_every_file(tmp_path):
    good = write(tmp_path, BASE, "good.yaml")
    bad = write(tmp_path, mutate("class: Account", "class: Certficate"), "bad.yaml")
    also_bad = write(tmp_path, mutate("timeout: 30", "timeout: fast"), "also_bad.yaml")
    result = CliRunner().invoke(main, ["validate", str(bad), str(good), str(also_bad)])
    assert result.exit_code == 3
    assert result.stdout == f"{good}: ok (2 steps, 2 entity types, 2 relationship types)\n"
    assert result.stderr.splitlines() == [
        f"{bad}:24:16: steps[0].entities[0].class: unknown JupiterOne class 'Certficate' (did you mean 'Certificate'?)",
        f'{also_bad}:17:14: sources.api.timeout: expected number, got a string ("fast")',
    ]


def test_cli_validate_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2  # a usage error (issue 13), not an invalid mapping
    assert result.stderr == f"etl: error: cannot read mapping file {path}: No such file or directory\n"


def test_cli_validate_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(BASE.replace("name: Acme", "name: Acm\xe9").encode("latin-1"))
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 3
    assert result.stderr == f"{path} is not UTF-8 text: invalid continuation byte\n"


def test_cli_validate_digicert_is_ok():
    result = CliRunner().invoke(main, ["validate", str(DIGICERT)])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert result.stdout.startswith(f"{DIGICERT}: ok (")


def test_cli_validate_digicert_relative_path(monkeypatch):
    monkeypatch.chdir(REPO)
    result = CliRunner().invoke(main, ["validate", "mappings/digicert.yaml"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("mappings/digicert.yaml: ok (")


def test_cli_schema_is_a_draft7_json_schema():
    result = CliRunner().invoke(main, ["schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    # The published schema accepts the real mapping and the test base mapping ...
    validator = jsonschema.Draft7Validator(schema)
    assert list(validator.iter_errors(yaml.safe_load(DIGICERT.read_text(encoding="utf-8")))) == []
    assert list(validator.iter_errors(yaml.safe_load(BASE))) == []
    # ... and rejects what the engine rejects at the schema stage.
    assert not validator.is_valid(
        yaml.safe_load(
            mutate("        properties:\n          name: name\n", "        proprties:\n          name: name\n")
        )
    )
