"""Exploration for issue 11 (see BENCHMARKS.md): MiniLM cosine, SmolLM2 query likelihood and a
yes/no read-out for the pairs of a pool, odd-numbered Cranfield queries only."""
import json, sys, torch, time, math
from transformers import AutoTokenizer, AutoModelForCausalLM, AutoModel
torch.set_num_threads(2)
M='/root/.cache/labelfleet/models/'
pool=json.load(open(sys.argv[1])); nq=int(sys.argv[2]); out=sys.argv[3]
D={}
for l in open('/work/shared/data/cranfield/corpus.jsonl'):
    d=json.loads(l); D[d['id']]=d
qids=sorted({p['q'] for p in pool},key=int)[:nq]
pool=[p for p in pool if p['q'] in qids]
print(len(pool),'pairs',flush=True)
# encoder cosine
et=AutoTokenizer.from_pretrained(M+'all-minilm-l6-v2'); em=AutoModel.from_pretrained(M+'all-minilm-l6-v2').eval()
def emb(texts):
    b=et(texts,padding=True,truncation=True,max_length=256,return_tensors='pt')
    with torch.no_grad(): h=em(**b).last_hidden_state
    m=b['attention_mask'].unsqueeze(-1).float(); v=(h*m).sum(1)/m.sum(1)
    return torch.nn.functional.normalize(v,dim=-1)
def doctext(d): return D[d]['body']
for i in range(0,len(pool),32):
    ch=pool[i:i+32]
    a=emb([p['query'] for p in ch]); b=emb([doctext(p['d']) for p in ch])
    for p,s in zip(ch,(a*b).sum(-1).tolist()): p['cos']=s
print('cos done',flush=True)
tk=AutoTokenizer.from_pretrained(M+'smollm2-135m-instruct'); lm=AutoModelForCausalLM.from_pretrained(M+'smollm2-135m-instruct',torch_dtype=torch.float32).eval()
yes=[tk.encode(w)[0] for w in ['Yes',' Yes']]; no=[tk.encode(w)[0] for w in ['No',' No']]
def build(p):
    doc=tk.decode(tk.encode(doctext(p['d']))[:256])
    pre="<|im_start|>user\nDocument: "+doc+"\n\nSearch query:"
    q=" "+p['query']
    post="\n\nIs the document relevant to the search query? Answer Yes or No.<|im_end|>\n<|im_start|>assistant\n"
    a=tk.encode(pre); b=tk.encode(q); c=tk.encode(post)
    # UPR-style plain prompt too
    return a,b,c
t0=time.time()
B=8
with open(out,'w') as f:
  for i in range(0,len(pool),B):
    ch=pool[i:i+B]; seqs=[]; spans=[]
    for p in ch:
        a,b,c=build(p); seqs.append(a+b+c); spans.append((len(a),len(a)+len(b)))
    L=max(len(s) for s in seqs)
    ids=torch.full((len(seqs),L),tk.pad_token_id or 0); mask=torch.zeros((len(seqs),L),dtype=torch.long)
    for r,s in enumerate(seqs): ids[r,:len(s)]=torch.tensor(s); mask[r,:len(s)]=1
    with torch.no_grad(): lo=lm(input_ids=ids,attention_mask=mask).logits.float().log_softmax(-1)
    for r,(p,s) in enumerate(zip(ch,seqs)):
        a,b=spans[r]
        tl=lo[r,a-1:b-1].gather(-1,torch.tensor(s[a:b]).unsqueeze(-1)).squeeze(-1)
        p['ql_sum']=tl.sum().item(); p['ql_mean']=tl.mean().item()
        last=lo[r,len(s)-1]
        py=torch.logsumexp(last[yes],0); pn=torch.logsumexp(last[no],0)
        p['yes']=(py-pn).item()
        f.write(json.dumps(p)+'\n')
    f.flush()
    if i%80==0: print(i,time.time()-t0,flush=True)
print('done',time.time()-t0)
