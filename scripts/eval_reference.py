"""Independent reference values for labelfleet-eval's tests: scikit-learn's kappas and NDCG and
the `krippendorff` package's ordinal alpha, on ratings the Rust test generates.

usage: eval_reference.py INPUT.json   (prints one JSON object)
INPUT: {"human": [..], "predicted": [..], "queries": [{"human": [..], "scores": [..]}, ..], "k": 10}
"""
import json
import sys

import krippendorff
import numpy as np
from sklearn.metrics import accuracy_score, cohen_kappa_score, ndcg_score

d = json.load(open(sys.argv[1]))
h, p = np.array(d["human"]), np.array(d["predicted"])
ndcgs = [ndcg_score([q["human"]], [q["scores"]], k=d["k"]) for q in d["queries"] if sum(q["human"]) > 0]
print(json.dumps({
    "accuracy": accuracy_score(h, p),
    "kappa": cohen_kappa_score(h, p),
    "kappa_linear": cohen_kappa_score(h, p, weights="linear"),
    "kappa_quadratic": cohen_kappa_score(h, p, weights="quadratic"),
    "alpha_ordinal": krippendorff.alpha(reliability_data=np.stack([h, p]), level_of_measurement="ordinal",
                                        value_domain=list(range(d["levels"]))),
    "ndcg": float(np.mean(ndcgs)),
}))
