"""Ask `honed serve` one question through the official openai client (used by examples/demo.sh).

    python examples/demo_request.py http://127.0.0.1:8765/v1 demo "The export button crashes the app."
"""

import sys
import time
import urllib.request

from openai import OpenAI

SYSTEM = ("You triage customer support messages for Tallyboard. Reply with only a JSON object with keys category "
          "(billing, account, bug, feature_request, how_to, cancellation), priority (low, medium, high) and "
          "sentiment (negative, neutral, positive).")  # the system prompt of examples/support_triage.jsonl
base_url, model, question = sys.argv[1], sys.argv[2], sys.argv[3]
for _ in range(240):  # the server loads the model first: wait for /health (at most 2 minutes)
    try:
        with urllib.request.urlopen(base_url.removesuffix("/v1") + "/health", timeout=2) as response:
            if response.status == 200:
                break
    except OSError:
        time.sleep(0.5)
else:
    sys.exit("the server did not come up within 2 minutes")
client = OpenAI(base_url=base_url, api_key="not-needed")
print("models:", [m.id for m in client.models.list()])
reply = client.chat.completions.create(
    model=model, max_tokens=64, temperature=0,
    messages=[{"role": "system", "content": SYSTEM},
              {"role": "user", "content": question}],
)
print("user:", question)
print("assistant:", reply.choices[0].message.content)
print("usage:", reply.usage.prompt_tokens, "prompt tokens,", reply.usage.completion_tokens, "completion tokens")
