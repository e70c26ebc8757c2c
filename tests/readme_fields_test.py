"""README's "Request fields" table against the code: every top-level field the request parser reads
(read_field in net/openai_request.cpp, is_structured_output_field) is in a row, and the refused and ignored rows
are exactly the table in net/request_field_policy.cpp, with the same neutral values.

Usage: readme_fields_test.py SOURCE_DIR
"""
import re
import sys
from pathlib import Path


def main():
    root = Path(sys.argv[1])
    readme = (root / "README.md").read_text()
    section = readme.split("## Request fields", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert rows, "no table rows under '## Request fields'"
    named = {}  # field name -> the row's "what inflight does" cell
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        for name in re.findall(r"`([a-z_.]+)`", cells[0]):
            named[name] = cells[2]

    policy = (root / "net/request_field_policy.cpp").read_text()
    entries = re.findall(r'\{"(\w+)", (true|false), (R"\(.*?\)"|".*?"), "', policy)
    assert len(entries) > 20, "the policy table was not found"
    problems = []
    for name, refused, neutral in entries:
        neutral = neutral[3:-2] if neutral.startswith('R"(') else neutral[1:-1]
        if name not in named:
            problems.append(f"{name}: in request_field_policy.cpp, not in README")
            continue
        if refused == "true":
            expected = "refused unless " + ", ".join(["`null`"] + [f"`{n}`" for n in neutral.split("|") if n])
        else:
            expected = "ignored"
        if named[name] != expected:
            problems.append(f"{name}: README says '{named[name]}', the code '{expected}'")
    policy_names = {name for name, _, _ in entries}
    for name, what in named.items():
        if (what.startswith("refused unless") or what == "ignored") and name not in policy_names:
            problems.append(f"{name}: README says '{what}', request_field_policy.cpp does not list it")

    # The top-level fields: those read_field and is_structured_output_field compare the key with.
    def function_body(path, signature):
        text = (root / path).read_text()
        start = text.index(signature)
        return text[start:text.index("\n}\n", start)]
    parsed = set(re.findall(r'key == "(\w+)"', function_body("net/openai_request.cpp", "std::optional<api_error> read_field(")))
    parsed |= set(re.findall(r'key == "(\w+)"', function_body("net/structured_output_request.cpp",
                                                              "bool is_structured_output_field(")))
    assert {"prompt", "logit_bias", "response_format"} <= parsed, parsed
    for name in sorted(parsed):
        if name not in named:
            problems.append(f"{name}: read by the request parser, not in README's table")
    assert not problems, "\n".join(problems)
    print(f"README's request fields table: {len(named)} fields, consistent with the code")


if __name__ == "__main__":
    main()
