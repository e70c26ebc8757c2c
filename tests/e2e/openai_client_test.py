"""End to end with the official `openai` Python client against `inflight serve`.

Usage: openai_client_test.py PATH_TO_INFLIGHT

Starts the server on a free port (it prints the port it bound), talks to it through the client exactly as
an application would (completions and chat, plain and streamed, an invalid request), then stops it with
SIGTERM and expects exit code 0. Any failed check raises, so the process exits non-zero.
"""
import sys

import openai

from inflight_server import InflightServer


def main():
    server = InflightServer(sys.argv[1], "--model-name", "smollm2")
    port = server.port
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)

        models = client.models.list()
        assert [m.id for m in models.data] == ["smollm2"], models

        completion = client.completions.create(model="smollm2", prompt="The capital of France is",
                                               max_tokens=8, temperature=0)
        text = completion.choices[0].text
        assert "Paris" in text, text
        assert completion.choices[0].finish_reason == "length"
        assert completion.usage.completion_tokens == 8 and completion.usage.prompt_tokens > 0

        streamed = "".join(chunk.choices[0].text for chunk in client.completions.create(
            model="smollm2", prompt="The capital of France is", max_tokens=8, temperature=0, stream=True)
            if chunk.choices)
        assert streamed == text, (streamed, text)

        chat = client.chat.completions.create(model="smollm2", temperature=0, max_tokens=24,
                                              messages=[{"role": "user", "content": "What is the capital of France?"}])
        answer = chat.choices[0].message.content
        assert chat.choices[0].message.role == "assistant" and answer, chat

        pieces, usage = [], None
        for chunk in client.chat.completions.create(
                model="smollm2", temperature=0, max_tokens=24, stream=True, stream_options={"include_usage": True},
                messages=[{"role": "user", "content": "What is the capital of France?"}]):
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            if chunk.usage:
                usage = chunk.usage
        assert "".join(pieces) == answer, (pieces, answer)
        assert usage is not None and usage.completion_tokens == chat.usage.completion_tokens, usage

        try:
            client.completions.create(model="smollm2", prompt="x", top_p=2.0)
            raise AssertionError("top_p=2 was accepted")
        except openai.BadRequestError as error:
            assert error.status_code == 400 and "top_p" in str(error), error
        try:
            client.completions.create(model="gpt-9", prompt="x")
            raise AssertionError("an unknown model was accepted")
        except openai.NotFoundError as error:
            assert error.status_code == 404, error
        print("openai client: all checks passed")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
