#!/usr/bin/env python3
"""Writes the NDJSON body of a bulk provisioning request (POST /v1/tenants/{id}/bulk) for
the Admin server 3 benchmark: 100k users, 10k groups nested as a tree (each holds the
next ten), every user in one group, ROLE_ID assigned to every group, and 1M ACL entries
(`viewer` on doc:d0..d999999, alternately to a user and to a group).

    scripts/gen-bulk-tenant.py ROLE_ID OUT.ndjson
"""
import json, sys
role = sys.argv[1]
out = open(sys.argv[2], "w")
w = out.write
U, G, ACL = 100_000, 10_000, 1_000_000
for i in range(U):
    w(json.dumps({"op": "user", "ref": f"u{i}", "email": f"user{i}@bench.test", "display_name": f"User {i}"}) + "\n")
for g in range(G):
    w(json.dumps({"op": "group", "ref": f"g{g}", "name": f"group {g}"}) + "\n")
# A tree of groups: g(k) holds g(10k+1 .. 10k+10).
for g in range(1, G):
    w(json.dumps({"op": "member", "group": f"g{(g - 1) // 10}", "group_member": f"g{g}"}) + "\n")
for i in range(U):
    w(json.dumps({"op": "member", "group": f"g{i % G}", "user": f"u{i}"}) + "\n")
for g in range(G):
    w(json.dumps({"op": "assignment", "role_id": role, "group": f"g{g}"}) + "\n")
for d in range(ACL):
    if d % 2:
        w(json.dumps({"op": "acl", "resource_type": "doc", "resource_id": f"d{d}", "subject_type": "user", "subject": f"u{d % U}", "relations": ["viewer"]}) + "\n")
    else:
        w(json.dumps({"op": "acl", "resource_type": "doc", "resource_id": f"d{d}", "subject_type": "group", "subject": f"g{d % G}", "relations": ["viewer"]}) + "\n")
