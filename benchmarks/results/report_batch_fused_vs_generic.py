import torch, sys, time
sys.path.insert(0,'/work/wt-fused')
from lensmap.metrics.mass import read_layers
from lensmap.lenses.base import HeadInputs
torch.set_num_threads(1)
V,d=151936,896
W=(torch.randn(V,d)*0.02).to(torch.bfloat16)
class L:
    name="toy"
    def decode(self,h,layer): return torch.nn.functional.linear(h.to(W.dtype),W)
    def head_inputs(self,h,layer): return HeadInputs(h.to(W.dtype),W,None,None)
hid=torch.randn(25,8,d); ids=torch.randint(0,V,(8,2)); wl=torch.ones(V,1)
t={"fused":[], "generic":[]}
for _ in range(2):
    for k in t:
        s=time.perf_counter(); read_layers(L(),hid,list(range(25)),wl,token_ids=ids,fused=(k=="fused")); t[k].append(time.perf_counter()-s)
print({k:min(v) for k,v in t.items()})
