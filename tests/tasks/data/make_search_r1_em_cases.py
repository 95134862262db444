"""Writes search_r1_em_cases.jsonl: 2,000 generated (prediction, golden answers) cases scored by
Search-R1's own em_check, the fixture of tests/tasks/test_qa_datasets.py.

To make it again: put verl/utils/reward_score/qa_em.py of github.com/PeterGriffinJin/Search-R1
(commit a14dc3a) beside this file and run `python make_search_r1_em_cases.py` here. Its code is not
copied into fireact; only what it answered is kept.
"""
import json, random, string
from qa_em import em_check
rng = random.Random(0)
pieces = ["the", "The", "a", "An", "U.S.", "usa", "Richard Nixon", "richard  nixon", "1,800", "1800", "Rock 'n' Roll",
          "rock n roll", "Theatre", "anthem, the", "yes", "Yes.", "no", "", " ", "São Paulo", "sao paulo", "Ⅻ", "ﬁve",
          "e.g.", "eg", "—", "-", "2wiki", "2 wiki", "(1990)", "1990", "THE BEATLES", "Beatles", "a.m.", "am"]
def text():
    return " ".join(rng.choice(pieces) for _ in range(rng.randint(0, 3))) + rng.choice(["", ".", "!", "  "])
def noise():
    alphabet = string.ascii_letters + string.digits + string.punctuation + " \t\né"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
cases = []
for i in range(2000):
    golds = [text() if rng.random() < 0.8 else noise() for _ in range(rng.randint(1, 3))]
    pred = rng.choice(golds) if rng.random() < 0.3 else (text() if rng.random() < 0.8 else noise())
    if rng.random() < 0.3:
        pred = pred.upper() if rng.random() < 0.5 else f"the {pred}."
    cases.append({"prediction": pred, "golden_answers": golds, "em": em_check(pred, golds)})
print(sum(c["em"] for c in cases), len(cases))
with open("search_r1_em_cases.jsonl", "w") as out:
    out.writelines(json.dumps(c, ensure_ascii=False) + "\n" for c in cases)
