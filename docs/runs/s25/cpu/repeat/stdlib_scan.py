import sys, glob, random, sysconfig, collections
paths = sorted(glob.glob(sysconfig.get_paths()['stdlib'] + '/**/*.py', recursive=True))
random.Random(0).shuffle(paths); paths = paths[:3000]
def hits(keys, copies, kmin, kmax):
    out = []
    for end in range(1, len(keys)+1):
        ks = keys[:end]
        for k in range(kmin, kmax+1):
            n = k*copies
            if len(ks) >= n and ks[-n:-k] == ks[-n+k:] and len(set(ks[-k:]))>0:
                out.append(end); break
    return out
stats = collections.Counter(); lines_total = 0
for p in paths:
    try: text = open(p, encoding='utf-8').read()
    except Exception: continue
    keys = [l.rstrip() for l in text.split('\n') if l.strip()]
    lines_total += len(keys)
    for name, (c, a, b) in {'1line x3': (3,1,1), 'block2-4 x3': (3,2,4), '1line x2': (2,1,1), 'block2-4 x2': (2,2,4)}.items():
        h = hits(keys, c, a, b)
        if h: stats[name+' files'] += 1
        stats[name+' hits'] += len(h)
print(lines_total, dict(stats))
