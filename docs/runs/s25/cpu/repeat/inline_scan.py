import glob, random, sysconfig, re, collections
paths = sorted(glob.glob(sysconfig.get_paths()['stdlib'] + '/**/*.py', recursive=True))
random.Random(0).shuffle(paths); paths = paths[:3000]
pats = {n: re.compile(r'(.{3,40}?)\1{%d,}' % (n - 1)) for n in (6, 8, 12)}
hits = collections.Counter(); files = collections.defaultdict(set); ex = {}
nl = 0
for p in paths:
    try: text = open(p, encoding='utf-8').read()
    except Exception: continue
    for line in text.split('\n'):
        nl += 1
        if len(line) > 2000: continue
        for n, r in pats.items():
            m = r.search(line)
            if m and len(set(m.group(1).strip())) > 1:
                hits[n] += 1; files[n].add(p)
                ex.setdefault(n, []).append(line.strip()[:100])
print(nl, {n: (hits[n], len(files[n])) for n in pats})
for n in (8, 12):
    print(n, random.Random(1).sample(ex[n], min(12, len(ex[n]))))
