#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into tests/fuzz/corpus/NAME/ (small, hand-made inputs that
reach each parser's main paths; libFuzzer grows them from there). Run it again after changing a seed;
inputs found by fuzzing (crashes turned regressions, tools/fuzz.sh --merge) live beside them."""
import hashlib
import json
import os
import struct
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def write(target, data):
    if isinstance(data, str):
        data = data.encode()
    folder = os.path.join(ROOT, target)
    os.makedirs(folder, exist_ok=True)
    name = "seed-" + hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


COMPLETION_BODIES = [
    {"model": "m", "prompt": "Hello", "max_tokens": 3},
    {"prompt": ["a", "b"], "n": 2, "stream": True, "stream_options": {"include_usage": True}, "max_tokens": 2},
    {"prompt": [1, 2, 3], "logprobs": 2, "temperature": 0.5, "top_p": 0.9, "top_k": 4, "min_p": 0.1, "seed": 7},
    {"prompt": [[1, 2], [3]], "stop": ["\n", "x"], "presence_penalty": 0.5, "frequency_penalty": -0.5,
     "repetition_penalty": 1.1, "ignore_eos": True, "user": "u", "max_completion_tokens": 4},
    {"prompt": "x", "max_tokens": 7},
    {"prompt": "x", "max_tokens": 14, "stream": True},
    {"prompt": "Hi", "max_tokens": 3, "echo": True, "best_of": 1, "logit_bias": {"42": -100, "7": 3.5},
     "skip_special_tokens": False, "suffix": "", "min_tokens": 0, "modalities": ["text"]},
]
CHAT_BODIES = [
    {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
     "stream": True, "logprobs": True, "top_logprobs": 2, "n": 2, "max_tokens": 2},
    {"messages": [{"role": "assistant", "content": None}], "stop": "z", "max_tokens": 7},
    {"messages": [{"role": "user", "content": "Weather?"},
                  {"role": "assistant", "content": None, "tool_calls": [
                      {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
                  {"role": "tool", "tool_call_id": "c1", "content": "cold"}],
     "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
     "tool_choice": "auto", "max_tokens": 8},
    {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 24, "parallel_tool_calls": False,
     "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}], "tool_choice": "required"},
    {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 24, "stream": True,
     "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function", "function": {"name": "f"}}},
]
OTHER_BODIES = [
    {"type": "completion", "id": 1, "prompt": "Hi", "max_tokens": 2},
    {"type": "chat", "id": "a\"b", "messages": [{"role": "user", "content": "Hi"}]},
    {"type": "cancel", "id": 1},
    {"prompt": "Hello <|im_start|>"},
    {"tokens": [1, 2, 49151, -1]},
]


def openai_request():
    for body in COMPLETION_BODIES + CHAT_BODIES + OTHER_BODIES:
        write("openai_request", json.dumps(body))
    write("openai_request", '{"prompt": "unterminated')
    write("openai_request", '{"prompt": "\\ud83d\\ude00 \\u0000", "n": 1e400}')


def http_request(method, path, body=None, headers=(), key=True):
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if key:
        lines.append("Authorization: Bearer fuzz-key")
    lines += list(headers)
    data = b""
    if body is not None:
        data = (json.dumps(body) if not isinstance(body, str) else body).encode()
        lines += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def http_session():
    for path in ["/health", "/ready", "/v1/models", "/metrics", "/v1/nodes", "/", "/nowhere"]:
        write("http_session", http_request("GET", path))
    for body in COMPLETION_BODIES:
        write("http_session", http_request("POST", "/v1/completions", body))
    for body in CHAT_BODIES:
        write("http_session", http_request("POST", "/v1/chat/completions", body))
    write("http_session", http_request("POST", "/tokenize", {"prompt": "Hello"}))
    write("http_session", http_request("POST", "/detokenize", {"tokens": [1, 2, 3]}))
    write("http_session", http_request("POST", "/v1/completions", {"prompt": "x"}, key=False))
    write("http_session", http_request("DELETE", "/v1/completions"))
    # Two requests on one connection, the second closing it.
    write("http_session", http_request("GET", "/health") + http_request("GET", "/v1/models", headers=["Connection: close"]))
    # A chunked body.
    chunked = b'{"prompt": "Hi", "max_tokens": 2}'
    write("http_session", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer fuzz-key\r\n"
          b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(chunked) + chunked + b"\r\n0\r\n\r\n")
    write("http_session", b"GET /v1/ws?api_key=fuzz-key HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    write("http_session", b"GET / HTTP/1.0\r\n\r\n")


def frame(opcode, payload, fin=True, mask=True):
    payload = payload.encode() if isinstance(payload, str) else payload
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    mask_bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 65536:
        head += bytes([mask_bit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack(">Q", n)
    if not mask:
        return head + payload
    key = b"\x12\x34\x56\x78"
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def websocket():
    text = [json.dumps(b) for b in OTHER_BODIES[:3]]
    for message in text:
        write("websocket", frame(1, message))
    write("websocket", frame(1, text[0]) + frame(1, text[2]))
    write("websocket", frame(1, json.dumps({"type": "completion", "id": 2, "prompt": "Hi", "n": 2, "logprobs": 1})))
    write("websocket", frame(1, json.dumps({"type": "chat", "id": 3, "messages": [{"role": "user", "content": "Hi"}],
                                            "max_tokens": 7})))
    half = len(text[1]) // 2
    write("websocket", frame(1, text[1][:half], fin=False) + frame(9, "ping") + frame(0, text[1][half:]))
    write("websocket", frame(2, b"\x00\x01binary"))
    write("websocket", frame(9, "p") + frame(10, "q") + frame(8, b"\x03\xe8bye"))
    write("websocket", frame(1, text[0], mask=False))
    write("websocket", frame(1, "not json"))


def gguf_string(s):
    s = s.encode()
    return struct.pack("<Q", len(s)) + s


def gguf_file(version=3, with_tensor=True):
    """A tiny GGUF: a few metadata types, a tokenizer of 4 tokens, a chat template, one f32 tensor."""
    kv = []
    def key(name, type_id, payload):
        kv.append(gguf_string(name) + struct.pack("<I", type_id) + payload)
    key("general.architecture", 8, gguf_string("llama"))
    key("general.name", 8, gguf_string("tiny"))
    key("llama.block_count", 4, struct.pack("<I", 1))
    key("llama.context_length", 4, struct.pack("<I", 64))
    key("llama.embedding_length", 4, struct.pack("<I", 4))
    key("llama.attention.layer_norm_rms_epsilon", 6, struct.pack("<f", 1e-5))
    key("general.alignment", 4, struct.pack("<I", 32))
    key("tokenizer.ggml.model", 8, gguf_string("gpt2"))
    tokens = ["a", "b", "ab", "<|im_start|>"]
    key("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, len(tokens)) + b"".join(gguf_string(t) for t in tokens))
    key("tokenizer.ggml.token_type", 9, struct.pack("<IQ", 5, 4) + struct.pack("<4i", 1, 1, 1, 3))
    key("tokenizer.ggml.merges", 9, struct.pack("<IQ", 8, 1) + gguf_string("a b"))
    key("tokenizer.ggml.bos_token_id", 4, struct.pack("<I", 3))
    key("tokenizer.ggml.add_bos_token", 7, b"\x00")
    key("tokenizer.chat_template", 8, gguf_string("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>{% endfor %}"))
    key("some.float64", 12, struct.pack("<d", 2.5))
    key("some.int_array", 9, struct.pack("<IQ", 10, 2) + struct.pack("<2q", -1, 1))
    tensors = []
    if with_tensor:
        tensors.append(gguf_string("token_embd.weight") + struct.pack("<I", 2) + struct.pack("<QQ", 4, 4)
                       + struct.pack("<I", 0) + struct.pack("<Q", 0))
    head = b"GGUF" + struct.pack("<I", version) + struct.pack("<QQ", len(tensors), len(kv)) + b"".join(kv) + b"".join(tensors)
    head += b"\x00" * ((32 - len(head) % 32) % 32)
    return head + (struct.pack("<16f", *range(16)) if with_tensor else b"")


def gguf():
    write("gguf", gguf_file(3))
    write("gguf", gguf_file(2))
    write("gguf", gguf_file(3, with_tensor=False))
    write("gguf", gguf_file(3)[:100])
    write("gguf", b"GGUF")


def tokenizer():
    for text in ["Hello, world!", " The capital of France is", "<|im_start|>user\nHi<|im_end|>", "naïve café 日本語 🙂",
                 "  \n\n\t  1234567 ", "don't I'll we've"]:
        write("tokenizer", b"\x00" + text.encode())
        write("tokenizer", b"\x01" + text.encode())
    write("tokenizer", b"\x00\xff\xfe\xc3")
    write("tokenizer", b"\x02" + struct.pack("<6i", 1, 2, 3, 100, 49151, 0))
    write("tokenizer", b"\x1a" + struct.pack("<3i", 1, 49152, -1))


def chat_template():
    chatml = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    smol = "{% if messages[0]['role'] != 'system' %}<|im_start|>system\\nYou are a helpful AI assistant named SmolLM<|im_end|>\\n{% endif %}" + chatml
    llama3 = "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    for template in [chatml, smol, llama3, "{{ anything }}", "-"]:
        write("chat_template", "\0".join([template, "system", "Be brief.", "user", "Hi <|im_end|>", "assistant", " ok "]))
        write("chat_template", "\0".join([template, "user", ""]))


def config():
    write("config", b"\x00[global]\nport=8001\nmax-n=4\napi-key=[\"a\", \"b\"]\nbatching=\"continuous\"\n")
    write("config", b"\x00; comment\nport=0\nhost=\"0.0.0.0\"\nread-timeout-s=5\nbody-limit-kb=64\n")
    write("config", b"\x00node=[\"127.0.0.1:9100\"]\nnode-weight=[\"127.0.0.1:9100=2\"]\n")
    write("config", b"\x00port=70000\n")
    write("config", b"\x00[other]\nx=1\n")
    write("config", b"\x01port=9100\njoin=\"127.0.0.1:9200\"\nmax-num-seqs=8\n")
    write("config", b"\x01threads=2\nkv-cache-mb=64\n")
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "config", "inflight.ini"), "rb") as f:
        write("config", b"\x00" + f.read())


if __name__ == "__main__":
    for make in (openai_request, http_session, websocket, gguf, tokenizer, chat_template, config):
        make()
    for target in sorted(os.listdir(ROOT)):
        print(target, len(os.listdir(os.path.join(ROOT, target))), "inputs")
    sys.exit(0)
