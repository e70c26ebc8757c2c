#!/usr/bin/env python3
"""Greedy continuations and first-step logits of the default model, computed by llama.cpp.

The independent reference for tests/test_forward.cpp. Run by a developer, not by CI:

    python3 -m venv /opt/refvenv && /opt/refvenv/bin/pip install llama-cpp-python==0.3.36 numpy
    /opt/refvenv/bin/python tools/make_generation_goldens.py [MODEL] > tests/data/generation_goldens.txt

Prompt ids come from llama.cpp's own tokenizer (special tokens parsed), so the forward-pass test does not
depend on inflight's tokenizer (which has its own reference test). Greedy decoding is done here by argmax
over llama.cpp's logits, 48 tokens, end-of-generation tokens ignored, so every case has the same length.
llama.cpp runs with flash attention off and an f16 KV cache; inflight's CPU kernels mirror that path's
roundings (fp16 Q and attention probabilities, Q8_1 activations).

Output format (text, one record per line):
    case NAME
    prompt ID ID ...
    greedy ID ID ...
    logits_stride S             then: logits V0 V1 ...   first-step logits at ids 0, S, 2S, ...
    top ID:LOGIT ...            the 20 largest first-step logits
    steps A:LA,B:LB ...         at each greedy step: the two largest logits (llama.cpp's margin)
"""
import os
import sys

import numpy as np
from llama_cpp import Llama, llama_cpp

MODEL = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(__file__), "..", "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
GREEDY_TOKENS = 48
LOGIT_STRIDE = 16


def chat(user, system=None):
    system = system or "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
            "<|im_start|>assistant\n")


CASES = [
    ("plain_capital", "The capital of France is"),
    ("plain_story", "Once upon a time, in a small village by the sea, there lived"),
    ("plain_code", "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"),
    ("plain_list", "Here are three tips for staying healthy:\n1."),
    ("plain_numbers", "1, 2, 3, 4, 5, 6, 7, 8,"),
    ("plain_science", "Photosynthesis is the process by which plants"),
    ("chat_greeting", chat("Hello! Who are you?")),
    ("chat_math", chat("What is 12 times 7? Explain step by step.")),
    ("chat_code", chat("Write a Python function that reverses a string.")),
    ("chat_history", chat("Tell me a short fact about the Roman Empire.")),
    ("chat_custom_system", chat("Translate 'good morning' into French.", system="You are a translator.")),
    ("plain_unicode", "Les élèves étudient à l'école. 日本語のテキストも"),
    ("single_token", "Hello"),
    ("plain_recipe", "To make a simple tomato soup, you will need"),
    ("plain_history", "The First World War began in 1914 when"),
    ("plain_json", '{"name": "Alice", "age": 30, "city":'),
    ("plain_question", "Q: Why is the sky blue?\nA:"),
    ("plain_dialogue", "\"Where are you going?\" asked the old man.\n\""),
    ("plain_whitespace", "Item\tPrice\nApple\t1.20\nBanana\t0.50\n"),
    ("chat_poem", chat("Write a haiku about autumn leaves.")),
    ("chat_advice", chat("How can I sleep better at night?")),
    ("chat_definition", chat("What does the word 'ephemeral' mean?")),
    ("chat_list", chat("List three primary colors.")),
    ("chat_long_context", chat("Summarize this: The quick brown fox jumps over the lazy dog. " * 6)),
    ("plain_weather", "The weather today is sunny with a high of"),
    ("plain_email", "Dear Mr. Smith,\n\nThank you for your letter of"),
    ("plain_sql", "SELECT name, email FROM users WHERE"),
    ("plain_cpp", "#include <iostream>\n\nint main() {\n"),
    ("plain_math", "The derivative of x squared is"),
    ("plain_planets", "The planets of the solar system, in order from the sun, are"),
    ("plain_german", "Der schnelle braune Fuchs springt"),
    ("plain_markdown", "# Installation\n\nTo install the package, run"),
    ("chat_capital", chat("What is the capital of Japan?")),
    ("chat_joke", chat("Tell me a joke about computers.")),
    ("chat_water", chat("Why is water important for life?")),
    ("chat_explain", chat("Explain what a neural network is in one sentence.")),
    ("chat_multi_turn", chat("And what about Germany?").replace(
        "<|im_start|>user\nAnd", "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\nThe capital of France is Paris.<|im_end|>\n<|im_start|>user\nAnd")),
    ("chat_numbers", chat("Count from one to ten.")),
    ("chat_emoji", chat("What does the emoji 🎉 mean?")),
    ("chat_short", chat("Hi")),
]


def main():
    llm = Llama(model_path=MODEL, n_ctx=1024, n_batch=512, n_threads=os.cpu_count(), flash_attn=False,
                logits_all=True, verbose=False)
    print(f"# llama-cpp-python {__import__('llama_cpp').__version__}, model {os.path.basename(MODEL)}, "
          f"flash_attn=False, greedy {GREEDY_TOKENS} tokens")
    for name, text in CASES:
        llm.reset()
        prompt = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        llm.eval(prompt)
        first = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        generated = []
        step_tops = []
        logits = first
        for _ in range(GREEDY_TOKENS):
            token = int(np.argmax(logits))
            second = int(np.argsort(-logits, kind="stable")[1])
            step_tops.append(f"{token}:{logits[token]:.5f},{second}:{logits[second]:.5f}")
            generated.append(token)
            llm.eval([token])
            logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        top = np.argsort(-first, kind="stable")[:20]
        print(f"case {name}")
        print("prompt " + " ".join(map(str, prompt)))
        print("greedy " + " ".join(map(str, generated)))
        print(f"logits_stride {LOGIT_STRIDE}")
        print("logits " + " ".join(f"{v:.5f}" for v in first[::LOGIT_STRIDE]))
        print("top " + " ".join(f"{int(i)}:{first[i]:.5f}" for i in top))
        print("steps " + " ".join(step_tops))


if __name__ == "__main__":
    main()
