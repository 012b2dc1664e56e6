# Run inside the parent (python3 -c ... PORT): print the names of every ChromaDB collection as a JSON list.
import json
import sys
import urllib.request

BASE = "http://127.0.0.1:%s/api/v2/tenants/default_tenant/databases/default_database/collections" % sys.argv[1]
names, offset = [], 0
while True:
    with urllib.request.urlopen("%s?limit=100&offset=%d" % (BASE, offset), timeout=10) as response:
        page = json.load(response)
    names += [collection["name"] for collection in page]
    if len(page) < 100:
        break
    offset += 100
print(json.dumps(sorted(names)))
