// Runs the chat page's own script (fetched from the server's GET /) against the live server, with a
// minimal stand-in for the browser's DOM and Node's WebSocket, and drives it as a user would: type and
// send, watch the answer stream in, then start a long answer and press Stop.
//
//   node chat_page_test.js PORT        (chat_page_test.py starts the server and runs this)
//
// The verdict is the exit code; every failed check prints what it saw.
"use strict";

const port = process.argv[2];
const base = `http://127.0.0.1:${port}`;
// Node 22 has a global WebSocket, Node 20 behind --experimental-websocket; older ones use Debian's node-ws.
const WebSocketImpl = globalThis.WebSocket || require("ws");

let failures = 0;
function check(condition, what, seen) {
  if (!condition) {
    failures += 1;
    console.error(`FAILED: ${what}` + (seen === undefined ? "" : ` (saw ${JSON.stringify(seen)})`));
  }
}

// Just what the page touches: elements by id, createElement, appendChild, textContent, disabled, handlers.
function fakeElement(id) {
  return { id, className: "", textContent: "", value: "", disabled: false, children: [],
           appendChild(child) { this.children.push(child); return child; } };
}
const elements = Object.fromEntries(["log", "prompt", "send", "stop", "form"].map((id) => [id, fakeElement(id)]));
elements.stop.disabled = true;
const document = {
  getElementById: (id) => elements[id],
  createElement: () => fakeElement(null),
};
const location = { protocol: "http:", host: `127.0.0.1:${port}`, search: "" };

async function waitFor(condition, what, seconds = 60) {
  const until = Date.now() + seconds * 1000;
  while (!condition()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const lines = (cls) => elements.log.children.filter((child) => child.className === cls);

async function send(text) {
  elements.prompt.value = text;
  await elements.form.onsubmit({ preventDefault() {} });
}

async function main() {
  const page = await (await fetch(`${base}/`)).text();
  const script = page.match(/<script>([\s\S]*)<\/script>/);
  if (!script) throw new Error("the page has no <script>");
  // The page's script, as a browser would run it, with our document, location and WebSocket.
  new Function("document", "location", "WebSocket", "URLSearchParams", script[1])(
      document, location, WebSocketImpl, URLSearchParams);

  // 1. A question: the answer streams into the assistant line, then a meta line says why it ended.
  await send("Say hello in one word.");
  check(elements.send.disabled && !elements.stop.disabled, "while answering: Send disabled, Stop enabled");
  await waitFor(() => lines("meta").length === 1, "the first answer to end");
  check(lines("user")[0].textContent === "Say hello in one word.", "the question is shown", lines("user")[0].textContent);
  check(lines("assistant")[0].textContent.length > 0, "the answer is shown");
  check(/^(stop|length), \d+ tokens$/.test(lines("meta")[0].textContent), "the end line gives reason and tokens",
        lines("meta")[0].textContent);
  check(!elements.send.disabled && elements.stop.disabled, "after the answer: Send enabled, Stop disabled");

  // 2. A long answer, stopped once it has started: it ends as "abort" and the page is ready again.
  await send("Write a very long story about a dragon who learns to bake bread.");
  await waitFor(() => lines("assistant")[1].textContent.length > 20, "the second answer to start streaming");
  elements.stop.onclick();
  await waitFor(() => lines("meta").length === 2, "the stopped answer to end", 30);
  check(/^abort, \d+ tokens$/.test(lines("meta")[1].textContent), "a stopped answer ends as abort",
        lines("meta")[1].textContent);
  const tokens = Number(lines("meta")[1].textContent.match(/(\d+) tokens/)[1]);
  check(tokens < 512, "Stop ended the answer before max_tokens", tokens);
  check(!elements.send.disabled && elements.stop.disabled, "after Stop: Send enabled, Stop disabled");

  // 3. Nothing is left running: the server's KV blocks all come back (its snapshot refreshes every second).
  let used = null;
  const until = Date.now() + 10000;
  while (Date.now() < until) {
    const metrics = await (await fetch(`${base}/metrics`)).text();
    used = metrics.match(/^inflight_kv_blocks_used (\d+)$/m)?.[1];
    if (used === "0" && /^inflight_num_requests_running 0$/m.test(metrics)) break;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  check(used === "0", "no KV block in use after the page's requests", used);
}

main()
  .catch((error) => { failures += 1; console.error(`FAILED: ${error.stack || error}`); })
  .finally(() => {
    console.log(failures === 0 ? "chat page: all checks passed" : `chat page: ${failures} check(s) failed`);
    process.exit(failures === 0 ? 0 : 1);
  });
