"""Pairwise accuracy (query-bootstrap 95% interval) and NDCG@10 of score columns (issue 11 exploration).

usage: judges_metrics.py SCORED.jsonl col1,col2,... [BASELINE_COL]
"""
import json, sys, math, collections, random
rows=[json.loads(l) for l in open(sys.argv[1])]
keys=sys.argv[2].split(',')
byq=collections.defaultdict(list)
for r in rows: byq[r['q']].append(r)
def pairacc(k, qs):
    c=n=0
    for q in qs:
        rs=byq[q]
        for i in range(len(rs)):
            for j in range(len(rs)):
                if rs[i]['grade']>rs[j]['grade']:
                    n+=1; d=rs[i][k]-rs[j][k]; c+= 1 if d>0 else (0.5 if d==0 else 0)
    return c/max(n,1)
def ndcg(k,qs,K=10):
    t=0
    for q in qs:
        rs=sorted(byq[q],key=lambda r:-r[k]); ideal=sorted(byq[q],key=lambda r:-r['grade'])
        dcg=sum((2**r['grade']-1)/math.log2(i+2) for i,r in enumerate(rs[:K]))
        idcg=sum((2**r['grade']-1)/math.log2(i+2) for i,r in enumerate(ideal[:K]))
        t+=dcg/idcg if idcg>0 else 0
    return t/len(qs)
qs=list(byq)
def ci(f,k):
    random.seed(0); v=sorted(f(k,[random.choice(qs) for _ in qs]) for _ in range(200))
    return v[5],v[194]
for k in keys:
    pa=pairacc(k,qs); lo,hi=ci(pairacc,k)
    print(f"{k:14s} pairacc {pa:.3f} [{lo:.3f},{hi:.3f}]  ndcg10 {ndcg(k,qs):.3f}")
# optional third argument: a baseline column; each key's paired difference from it (pairwise
# accuracy and NDCG@10, the same query resamples for both)
if len(sys.argv) > 3:
    base = sys.argv[3]
    for k in keys:
        for name, f in (("pairacc", pairacc), ("ndcg10", ndcg)):
            random.seed(0); diffs = []
            for _ in range(1000):
                s = [random.choice(qs) for _ in qs]
                diffs.append(f(k, s) - f(base, s))
            diffs.sort()
            print(f"{k:14s} - {base}: {name} {f(k, qs) - f(base, qs):+.3f} [{diffs[25]:+.3f},{diffs[974]:+.3f}]")
