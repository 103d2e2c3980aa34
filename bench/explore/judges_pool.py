# exploration only: odd-numbered Cranfield queries, pool = judged + top-10 BM25 unjudged
import json, math, re, collections, sys
D='/work/shared/data/cranfield/'
docs=[json.loads(l) for l in open(D+'corpus.jsonl')]
docs={d['id']:d for d in docs if (d.get('body') or '').strip()}
qs={}
for l in open(D+'queries.tsv'):
    q,t=l.rstrip('\n').split('\t',1); qs[q]=t
qrels=collections.defaultdict(dict)
for l in open(D+'qrels.txt'):
    q,_,d,g=l.split(); qrels[q][d]=int(g)
tok=lambda s: re.findall(r'[a-z0-9]+',s.lower())
ids=list(docs)
toks={i:tok(' '.join([docs[i].get('title',''),docs[i]['body'],docs[i].get('author','')])) for i in ids}
N=len(ids); avg=sum(len(t) for t in toks.values())/N
df=collections.Counter(); tfs={}
for i in ids:
    c=collections.Counter(toks[i]); tfs[i]=c; df.update(c.keys())
def bm25(q):
    qt=tok(q); out={}
    for i in ids:
        s=0; L=len(toks[i]); tf=tfs[i]
        for t in qt:
            if t in tf:
                idf=math.log(1+(N-df[t]+.5)/(df[t]+.5)); f=tf[t]
                s+=idf*f*2.2/(f+1.2*(0.25+0.75*L/avg))
        out[i]=s
    return out
which=sys.argv[1]  # odd/even
pool=[]
for q in sorted(qrels,key=int):
    if (int(q)%2==1)!=(which=='odd'): continue
    sc=bm25(qs[q]); rank=sorted(ids,key=lambda i:-sc[i])
    j={d:g for d,g in qrels[q].items() if d in docs}
    un=[d for d in rank if d not in j][:10]
    for d,g in list(j.items())+[(d,0) for d in un]:
        pool.append(dict(q=q,query=qs[q],d=d,grade=g,bm25=sc[d]))
json.dump(pool,open(f'pool_{which}.json','w'))
print(len(pool), len({p['q'] for p in pool}))
