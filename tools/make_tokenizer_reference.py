#!/usr/bin/env python3
"""Writes tests/data/tokenizer_reference.tsv: llama.cpp's token ids for a fixed corpus, the acceptance
bar for inflight's tokenizer (tests/test_tokenizer.cpp compares every line).

Run (needs a venv with llama-cpp-python; CI does NOT run this, it only reads the committed TSV):
    /opt/refvenv/bin/python tools/make_tokenizer_reference.py [--model PATH] [--out PATH]

Generated with llama-cpp-python 0.3.36 (which builds llama.cpp from source) and
models/SmolLM2-135M-Instruct.Q4_1.gguf (tokenizer.ggml.pre = smollm).

Output, one case per line:  <special 0/1> TAB <text as hex of its bytes> TAB <space-separated ids>
`special` is llama_tokenize's parse_special flag. BOS is never added (add_bos=False). A few cases are
deliberately invalid UTF-8, to pin llama.cpp's replacement of bad bytes by U+FFFD.

It also writes tests/data/tokenizer_reference_variants.tsv: the same texts (special=1) tokenized by
copies of the model whose tokenizer.ggml.pre is rewritten to other pre-tokenizers (llama-bpe, gpt-2,
default), so their regexes are checked against llama.cpp without a Llama-3 GGUF. The copies hold the
metadata only (no tensors) and are written with the `gguf` package (0.19.0) into a temporary directory.
Format: <pre> TAB <special> TAB <hex> TAB <ids>.

The corpus is deterministic: a hand-written list, then programmatic combinations drawn with a fixed seed.
"""
import argparse
import os
import random
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LONG_PARAGRAPH = (
    "The history of natural language processing generally started in the 1950s, although work can be "
    "found from earlier periods. In 1950, Alan Turing published an article titled \"Computing Machinery "
    "and Intelligence\" which proposed what is now called the Turing test as a criterion of intelligence. "
    "The Georgetown experiment in 1954 involved fully automatic translation of more than sixty Russian "
    "sentences into English. The authors claimed that within three or five years, machine translation "
    "would be a solved problem.  However, real progress was much slower, and after the ALPAC report in "
    "1966, which found that ten-year-long research had failed to fulfill the expectations, funding for "
    "machine translation was dramatically reduced.\n\nLittle further research in machine translation was "
    "conducted until the late 1980s when the first statistical machine translation systems were "
    "developed. Some notably successful NLP systems developed in the 1960s were SHRDLU, a natural "
    "language system working in restricted \"blocks worlds\" with restricted vocabularies, and ELIZA, a "
    "simulation of a Rogerian psychotherapist, written by Joseph Weizenbaum between 1964 and 1966. "
    "Using almost no information about human thought or emotion, ELIZA sometimes provided a startlingly "
    "human-like interaction. When the \"patient\" exceeded the very small knowledge base, ELIZA might "
    "provide a generic response, for example, responding to \"My head hurts\" with \"Why do you say your "
    "head hurts?\".\n"
)

HAND_WRITTEN = [
    # empty, single characters, plain words
    "", " ", "  ", "\n", "\t", "a", "A", "Hello", "Hello world", "hello world!", " Hello", "Hello ",
    "Hello  world", "Hello   world   ", "The quick brown fox jumps over the lazy dog.",
    "THE QUICK BROWN FOX", "iPhone camelCase PascalCase snake_case kebab-case SCREAMING_SNAKE",
    # contractions, including upper-case forms the smollm regex does not treat as contractions
    "I'm here", "don't", "we're", "they've", "you'll", "he'd", "it's", "IT'S", "DON'T", "We'RE",
    "I'M", "You'LL", "'s", "''s", "'", "O'Neil's book", "rock 'n' roll", "can't won't shan't",
    "'Tis the season", "the dog's bone's", "'re'", "' s", "'st", "'ll've'd",
    # digits and numbers
    "1", "12", "123", "1234", "12345", "123456", "1234567", "12345678", "123456789", "1234567890",
    "3.14159", "1,000,000", "1 000 000", "1_000_000", "0x1F", "0b1010", "1e10", "6.02e23", "-42", "+7",
    "2024-01-15", "12:30:45", "$1,234.56", "€99,99", "£5", "50%", "v1.2.3", "192.168.0.1",
    "½ ¾ ²³", "٣٤٥ ٦", "१२३४", "Ⅻ Ⅳ", "①②③", "x²+y²=z²", "Room 101a", "abc123def456", "a1b2c3",
    " 42", "  42", "42 ", "4 2", "00000", "007",
    # accents and scripts
    "café", "naïve résumé", "Ångström", "ça va?", "Zürich", "São Paulo", "Crème brûlée",
    "Привет, мир!", "Съешь же ещё этих мягких французских булок", "Καλημέρα κόσμε", "Ελληνικά",
    "مرحبا بالعالم", "السلام عليكم", "नमस्ते दुनिया", "हिन्दी भाषा", "สวัสดีชาวโลก", "ภาษาไทย",
    "שלום עולם", "Tiếng Việt có dấu", "Ողջույն", "გამარჯობა", "ᚠᛇᚻ᛫ᛒᛦᚦ",
    "e\u0301", "cafe\u0301", "a\u0300\u0301\u0302", "\u0301", " \u0301x",
    "Ω≈ç√∫˜µ≤≥÷", "ﬁ ﬂ", "ＦＵＬＬＷＩＤＴＨ　ｔｅｘｔ", "ǅ ǈ ǋ",
    # rare code points: unassigned, private use, Unicode 15/16 letters and digits (newer than some
    # Unicode tables), format characters, C0 controls, case-folding lookalikes
    "\u0378", "a\u0378b", "x \u0378\u0378 y", "\ue000\ue001", " \ue000", "\U000F0000",
    "\U00011F04\U00011F05", " \U00011F04x", "\U00011F50\U00011F51", "\U0001E5D0\U0001E5D1",
    "x\u180ey", "x\ufeffy", "x\u00ady", "\u2066abc\u2069", "it'\u017f", "I'\u212a", "\u3007",
    "\x00", "a\x00b", "\x7f", "\x1b[31mred\x1b[0m", "\u0085\u0085x", " \u0085 x",
    # CJK
    "こんにちは世界", "你好，世界！", "안녕하세요 세계", "東京タワー", "漢字かなカナ", "中文English混合",
    "我爱北京天安门。", "これはテストです。", "한국어 텍스트",
    # emoji, ZWJ sequences, flags, skin tones, variation selectors
    "😀", "😀😀 😀", "👍🏽", "👨\u200d👩\u200d👧\u200d👦", "🏳️\u200d🌈", "🇺🇸🇯🇵🇩🇪", "❤️", "I ❤️ NY",
    "🔥🔥🔥", "Good job! 👏👏", "🩷 🫨 🪿", "🐦\u200d🔥", "👩🏿\u200d💻", "☺", "✔ ✗", "😀abc",
    # whitespace runs
    "a  b", "a   b", "a    b", "a\tb", "a\t\tb", "a\n\nb", "a \n b", "a\r\nb", "a\r\n\r\nb",
    "   leading", "trailing   ", "\n\n\n", " \n ", "\t \t", "  \n\n  ", "x\u00a0y", "x \u00a0y",
    "x\u3000y", "x\u2028y", "x\u0085y", "x\u200by", "x\u2009y", "x\u202fy", "\u00a0\u00a0x",
    "    indented", "\n    def f():\n        return 1\n", "line1\nline2\n", "a\n", "\n\na",
    "a \tb", "a\t b", "a \t b", "end.\n\n\n\n", "\r", "\r\r\n", "\v\f", " \t\n\r\v\f",
    # punctuation runs
    "!!!", "...", "?!?!", "—", "a–b", "«guillemets»", "“smart quotes”", "a--b", "***bold***",
    "#@$%^&*()", "<<>>", "::", "->", "=>", "!=", "===", "...\n", "`code`", "```", "~~~", "¿Qué?",
    "¡Hola!", "…", "«»", "【注意】", "(parenthesized)", "[brackets]", "{braces}", "a/b\\c", "|pipe|",
    " !", "  !", "! ", "a.b.c", "'quoted'", "\"double\"",
    # URLs, paths, e-mail
    "https://example.com/path?query=1&x=y#frag", "www.google.com", "user@example.com",
    "ftp://x.y/z", "C:\\Windows\\System32", "/usr/local/bin/python3", "../a/b.txt",
    "http://localhost:8080/v1/chat/completions",
    # code
    "def add(a, b):\n    return a + b\n",
    "for (int i = 0; i < n; ++i) { sum += v[i]; }",
    "#include <iostream>\nint main() {\n\tstd::cout << \"hi\\n\";\n}\n",
    "const x = () => { return `template ${value}`; };",
    "fn main() { let v: Vec<u32> = vec![1, 2, 3]; println!(\"{:?}\", v); }",
    "func (s *Server) Handle(w http.ResponseWriter, r *http.Request) {}",
    "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name;",
    "<div class=\"container\"><p>Hello</p></div>",
    "{\"key\": [1, 2.5, true, null], \"nested\": {\"a\": \"b\"}}",
    "if [ -f \"$FILE\" ]; then echo 'ok' | grep -E '^[a-z]+$'; fi",
    "^(?:[a-z0-9!#$%&'*+/=?^_`{|}~-]+)$",
    "x=1;y=2;z=x+y",
    "    }\n}\n",
    "print(f\"{x!r:>10}\")",
    # special tokens embedded in text
    "<|im_start|>user\nhi<|im_end|>", "<|im_start|>", "<|im_end|>\n", "<|endoftext|>",
    "text<|endoftext|>more", "<|im_start|><|im_end|>", "<|im_start", "im_start|>",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat's 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<repo_name>foo<file_sep>bar", "<jupyter_code>print(1)<jupyter_output>1<empty_output>",
    " <|im_end|> ", "<|im_end|><|im_end|>", "<<|im_end|>>", "<|im_start|>user<|im_start|>",
    "a<|im_end|>b", "  <|im_end|>  ", "<|im_end|>\n\n", "<filename>x.py\n<gh_stars>10",
    # long text
    LONG_PARAGRAPH,
    LONG_PARAGRAPH.upper(),
]

# Texts also tokenized with special=False: the specials must then be spelled out as plain text.
NOT_SPECIAL = [
    "<|im_start|>user\nhi<|im_end|>", "<|im_start|>", "<|endoftext|>", "text<|endoftext|>more",
    "<repo_name>foo<file_sep>bar", " <|im_end|> ", "<<|im_end|>>", "plain text, nothing special",
    "", "<jupyter_code>print(1)",
]

# Raw byte strings that are not valid UTF-8 (llama.cpp turns each bad byte into U+FFFD).
INVALID_UTF8 = [
    b"\xff", b"abc\x80def", b"\xc3", b"caf\xc3", b"\xe2\x82", b"x\xe2\x82y", b"\xed\xa0\x80",
    b"\xc0\xaf", b"\xf0\x9f\x98", b"a \xfe b", b"\x80\x80\x80",
]


def programmatic(rng):
    """Deterministic combinations that stress the pre-tokenizer's boundaries."""
    out = []
    # digit runs of every length 1..30, bare, after a space, after a letter, before a letter
    digits = "31415926535897932384626433832795028841971"
    for n in range(1, 31):
        d = digits[:n]
        out += [d, " " + d, "x" + d, d + "x", "$" + d + ".99"]
    # word / separator / word grid (sampled)
    words = ["hello", "Hello", "HELLO", "123", "naïve", "日本語", "😀", "'s", "!?", "\t", "Привет",
             "x", "42abc", "'LL", "–", "é"]
    seps = [" ", "  ", "   ", "\n", "\t", " \n", "\n ", "", "\r\n", " \t ", "\u00a0", "\n\n"]
    grid = [(a, s, b) for a in words for s in seps for b in words]
    for a, s, b in rng.sample(grid, 160):
        out.append(a + s + b)
    # random strings over a mixed alphabet (letters, digits, marks, spaces of all kinds, symbols)
    alphabet = (list("aZ09 ") * 3 + list("\n\t\r'sltdmrve.,!?-_/$<>|") + [
        "é", "ß", "Ж", "λ", "ع", "न", "ि", "ก", "ั", "中", "日", "한", "😀", "👍", "🏽", "\u200d",
        "\u00a0", "\u3000", "\u2028", "\u0301", "½", "٣", "€", "—", "“", "…", "  ", "\n\n", "   "])
    for _ in range(120):
        n = rng.randint(1, 40)
        out.append("".join(rng.choice(alphabet) for _ in range(n)))
    # whitespace runs of many shapes before a word and at the end
    for n in range(1, 9):
        out += [" " * n + "x", "x" + " " * n, "x" + " " * n + "y", "\n" * n + "x", "x" + "\t" * n + "y",
                "x" + " \n" * n + "y"]
    return out


VARIANT_PRES = ["llama-bpe", "gpt-2", "default"]


def write_variant(src, pre, dst):
    """A metadata-only copy of `src` with tokenizer.ggml.pre = `pre` (enough for vocab_only loads)."""
    from gguf import GGUFReader, GGUFValueType, GGUFWriter

    reader = GGUFReader(src)
    writer = GGUFWriter(dst, arch=reader.fields["general.architecture"].contents())
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value = pre if key == "tokenizer.ggml.pre" else field.contents()
        vtype = field.types[0]
        sub_type = field.types[1] if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(key, value, vtype, sub_type=sub_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(REPO, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "data", "tokenizer_reference.tsv"))
    args = ap.parse_args()

    import llama_cpp
    from llama_cpp import Llama

    llm = Llama(model_path=args.model, vocab_only=True, verbose=False)

    cases = []  # (special, bytes)
    for text in HAND_WRITTEN + programmatic(random.Random(20240611)):
        cases.append((1, text.encode("utf-8")))
    for text in NOT_SPECIAL:
        cases.append((0, text.encode("utf-8")))
    for raw in INVALID_UTF8:
        cases.append((1, raw))

    seen = set()
    lines = []
    for special, raw in cases:
        if (special, raw) in seen:
            continue
        seen.add((special, raw))
        ids = llm.tokenize(raw, add_bos=False, special=bool(special))
        lines.append(f"{special}\t{raw.hex()}\t{' '.join(str(i) for i in ids)}\n")

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="ascii", newline="\n") as f:
        f.writelines(lines)
    print(f"wrote {len(lines)} cases to {args.out} (llama-cpp-python {llama_cpp.__version__})",
          file=sys.stderr)

    variant_lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for pre in VARIANT_PRES:
            path = os.path.join(tmp, f"{pre}.gguf")
            write_variant(args.model, pre, path)
            variant = Llama(model_path=path, vocab_only=True, verbose=False)
            done = set()
            for special, raw in cases:
                if special != 1 or raw in done:
                    continue
                done.add(raw)
                ids = variant.tokenize(raw, add_bos=False, special=True)
                variant_lines.append(f"{pre}\t1\t{raw.hex()}\t{' '.join(str(i) for i in ids)}\n")
            del variant
    variants_out = os.path.join(os.path.dirname(args.out), "tokenizer_reference_variants.tsv")
    with open(variants_out, "w", encoding="ascii", newline="\n") as f:
        f.writelines(variant_lines)
    print(f"wrote {len(variant_lines)} cases to {variants_out}", file=sys.stderr)


if __name__ == "__main__":
    main()
