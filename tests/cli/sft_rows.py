"""tests/cli/sft_rows.py RL_JSONL SFT_JSONL — SFT rows for the CLI tests from
`aha-engine datagen arithmetic --format rl` rows: the prompt, and a short
completion in the R1 format, "<think>A OP B</think> <answer>ANSWER</answer>"."""
import json
import sys

with open(sys.argv[1]) as f, open(sys.argv[2], "w") as out:
    for line in f:
        r = json.loads(line)
        out.write(json.dumps({"prompt": r["prompt"], "completion": "<think>%s %s %s</think> <answer>%s</answer>"
                              % (r["a"], r["op"], r["b"], r["answer"])}) + "\n")
