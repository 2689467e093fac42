"""SpiceDB's official Python client (PyPI `authzed`) against a running `arbiter serve`.

Run by server/tests/spicedb_client.rs, which installs the client into a cached
virtualenv and starts the server:

    python spicedb_client.py HOST:PORT PRESHARED_KEY DESCRIPTOR_SET

Every call goes through the client's own generated stubs, so this is what an
application using SpiceDB sees after changing the address. Every answer is asserted;
the first failure exits non-zero with what was expected and what came back.
"""

import queue
import sys
import threading
import time

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.struct_pb2 import Struct

from authzed.api.v1 import (
    AlgebraicSubjectSet,
    CheckBulkPermissionsRequest,
    CheckBulkPermissionsRequestItem,
    CheckPermissionRequest,
    CheckPermissionResponse,
    Consistency,
    ContextualizedCaveat,
    Cursor,
    DeleteRelationshipsRequest,
    DeleteRelationshipsResponse,
    DiffSchemaRequest,
    ExpandPermissionTreeRequest,
    InsecureClient,
    LookupResourcesRequest,
    LookupSubjectsRequest,
    ObjectReference,
    Precondition,
    ReadRelationshipsRequest,
    ReadSchemaRequest,
    ReflectionSchemaFilter,
    ReflectSchemaRequest,
    Relationship,
    RelationshipFilter,
    RelationshipUpdate,
    SubjectFilter,
    SubjectReference,
    WatchRequest,
    WriteRelationshipsRequest,
    WriteSchemaRequest,
    ZedToken,
)
from authzed.api.v1.permission_service_pb2 import (
    ExportBulkRelationshipsRequest,
    ImportBulkRelationshipsRequest,
    LookupPermissionship,
)

SCHEMA = """
definition user {}

definition group {
    relation member: user | group#member
}

definition folder {
    relation parent: folder
    relation viewer: user | group#member
    permission view = viewer + parent->view
}

definition doc {
    relation parent: folder
    relation owner: user
    relation viewer: user | user:* | group#member
    relation banned: user
    permission edit = owner
    permission view = (viewer + edit + parent->view) - banned
}

definition console {
    relation admin: user | user with on_network
    permission manage = admin
}

caveat on_network(user_ip ipaddress, cidr string) {
    user_ip.in_cidr(cidr)
}
"""

HAS = CheckPermissionResponse.PERMISSIONSHIP_HAS_PERMISSION
NO = CheckPermissionResponse.PERMISSIONSHIP_NO_PERMISSION

passed = 0


def ok(what):
    global passed
    passed += 1
    print(f"ok {what}", flush=True)


def expect(actual, expected, what):
    if actual != expected:
        print(f"FAIL {what}: expected {expected!r}, got {actual!r}", flush=True)
        print(f"{passed} passed, 1 failed", flush=True)
        sys.exit(1)
    ok(what)


def expect_error(fn, code, what, contains=None):
    try:
        result = fn()
        # Streams fail on the first read.
        if hasattr(result, "__iter__") and not isinstance(result, (str, bytes)):
            list(result)
    except grpc.RpcError as e:
        expect(e.code(), code, f"{what} ({e.details()})")
        if contains is not None:
            expect(contains in e.details(), True, f"{what}: message names `{contains}`")
        return
    expect("no error", code, what)


def obj(text):
    t, i = text.split(":", 1)
    return ObjectReference(object_type=t, object_id=i)


def subj(text):
    o, _, rel = text.partition("#")
    return SubjectReference(object=obj(o), optional_relation=rel)


def rel(text):
    left, right = text.split("@", 1)
    o, r = left.split("#", 1)
    return Relationship(resource=obj(o), relation=r, subject=subj(right))


def text_of(r):
    s = f"{r.resource.object_type}:{r.resource.object_id}#{r.relation}@{r.subject.object.object_type}:{r.subject.object.object_id}"
    if r.subject.optional_relation:
        s += f"#{r.subject.optional_relation}"
    return s


def touch(text):
    return RelationshipUpdate(operation=RelationshipUpdate.Operation.OPERATION_TOUCH, relationship=rel(text))


def create(text):
    return RelationshipUpdate(operation=RelationshipUpdate.Operation.OPERATION_CREATE, relationship=rel(text))


def delete(text):
    return RelationshipUpdate(operation=RelationshipUpdate.Operation.OPERATION_DELETE, relationship=rel(text))


def minimize_latency():
    return Consistency(minimize_latency=True)


def fully_consistent():
    return Consistency(fully_consistent=True)


def at_least(token):
    return Consistency(at_least_as_fresh=token)


def at_exact(token):
    return Consistency(at_exact_snapshot=token)


def check(client, query, consistency=None):
    left, right = query.split("@", 1)
    o, p = left.split("#", 1)
    resp = client.CheckPermission(
        CheckPermissionRequest(consistency=consistency, resource=obj(o), permission=p, subject=subj(right))
    )
    return resp.permissionship, resp.checked_at.token


def wire_compatibility(descriptor_path):
    """Arbiter's authzed.api.v1 against the client's own: every message, field number,
    field type, enum value and method Arbiter defines must be the client's."""
    fds = descriptor_pb2.FileDescriptorSet()
    with open(descriptor_path, "rb") as f:
        fds.ParseFromString(f.read())
    client = descriptor_pool.Default()
    problems = []
    compared = 0

    def walk(prefix, messages, enums):
        nonlocal compared
        for m in messages:
            name = f"{prefix}.{m.name}"
            try:
                cm = client.FindMessageTypeByName(name)
            except KeyError:
                problems.append(f"the client has no message {name}")
                continue
            fields = {f.number: f for f in cm.fields}
            for f in m.field:
                c = fields.get(f.number)
                compared += 1
                if c is None:
                    problems.append(f"{name}.{f.name} = {f.number}: not in the client")
                    continue
                ctype = c.message_type.full_name if c.message_type else (c.enum_type.full_name if c.enum_type else None)
                mtype = f.type_name.lstrip(".") or None
                if (c.name, c.type, ctype, c.is_repeated) != (f.name, f.type, mtype, f.label == 3):
                    problems.append(f"{name}.{f.name} = {f.number}: the client has {c.name} ({c.type} {ctype})")
            walk(name, m.nested_type, m.enum_type)
        for e in enums:
            name = f"{prefix}.{e.name}"
            ce = client.FindEnumTypeByName(name)
            if {v.name: v.number for v in ce.values} != {v.name: v.number for v in e.value}:
                problems.append(f"enum {name} differs")

    services = 0
    for fd in fds.file:
        if fd.package != "authzed.api.v1":
            continue
        walk(fd.package, fd.message_type, fd.enum_type)
        for s in fd.service:
            services += 1
            methods = {m.name: m for m in client.FindServiceByName(f"{fd.package}.{s.name}").methods}
            for m in s.method:
                c = methods.get(m.name)
                if c is None:
                    problems.append(f"the client has no method {s.name}.{m.name}")
                    continue
                mine = (m.input_type.lstrip("."), m.output_type.lstrip("."), m.client_streaming, m.server_streaming)
                theirs = (c.input_type.full_name, c.output_type.full_name, c.client_streaming, c.server_streaming)
                if mine != theirs:
                    problems.append(f"method {s.name}.{m.name}: {mine} vs the client's {theirs}")
    expect(problems, [], f"wire compatibility ({compared} fields, {services} services compared)")
    expect(services, 3, "PermissionsService, SchemaService and WatchService are described")


def main():
    endpoint, key, descriptor_path = sys.argv[1:4]
    wire_compatibility(descriptor_path)
    client = InsecureClient(endpoint, key)

    # Schema.
    expect_error(lambda: client.ReadSchema(ReadSchemaRequest()), grpc.StatusCode.NOT_FOUND, "ReadSchema before any schema")
    written = client.WriteSchema(WriteSchemaRequest(schema=SCHEMA))
    expect(written.written_at.token.startswith("r"), True, "WriteSchema returns a ZedToken")
    read = client.ReadSchema(ReadSchemaRequest())
    expect(read.schema_text, SCHEMA, "ReadSchema returns the schema as written")
    reflected = client.ReflectSchema(ReflectSchemaRequest(consistency=fully_consistent()))
    expect([d.name for d in reflected.definitions], ["user", "group", "folder", "doc", "console"], "ReflectSchema: the definitions")
    doc = reflected.definitions[3]
    expect([r.name for r in doc.relations], ["parent", "owner", "viewer", "banned"], "ReflectSchema: doc's relations")
    expect([p.name for p in doc.permissions], ["edit", "view"], "ReflectSchema: doc's permissions")
    expect(
        [(t.subject_definition_name, t.WhichOneof("typeref"), t.optional_relation_name) for t in doc.relations[2].subject_types],
        [("user", "is_terminal_subject", ""), ("user", "is_public_wildcard", ""), ("group", "optional_relation_name", "member")],
        "ReflectSchema: the subject types of doc#viewer",
    )
    filtered = client.ReflectSchema(
        ReflectSchemaRequest(optional_filters=[ReflectionSchemaFilter(optional_definition_name_filter="fo", optional_permission_name_filter="vi")])
    )
    expect(
        [(d.name, [r.name for r in d.relations], [p.name for p in d.permissions]) for d in filtered.definitions],
        [("folder", [], ["view"])],
        "ReflectSchema with a filter",
    )
    expect_error(
        lambda: client.WriteSchema(WriteSchemaRequest(schema="definition doc { relation viewer: nobody }")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "an invalid schema is refused",
    )

    # Writes, with preconditions.
    first = client.WriteRelationships(
        WriteRelationshipsRequest(
            updates=[
                touch("group:eng#member@user:alice"),
                touch("group:all#member@group:eng#member"),
                touch("folder:root#viewer@group:all#member"),
                touch("folder:sub#parent@folder:root"),
                touch("doc:readme#parent@folder:sub"),
                touch("doc:readme#owner@user:olga"),
                touch("doc:public#viewer@user:*"),
                touch("doc:public#banned@user:mallory"),
                touch("doc:a#viewer@user:bob"),
                touch("doc:b#viewer@user:bob"),
                touch("doc:c#viewer@user:bob"),
            ]
        )
    ).written_at
    must_not_exist = Precondition(
        operation=Precondition.Operation.OPERATION_MUST_NOT_MATCH,
        filter=RelationshipFilter(resource_type="doc", optional_resource_id="secret"),
    )
    must_exist = Precondition(
        operation=Precondition.Operation.OPERATION_MUST_MATCH,
        filter=RelationshipFilter(
            resource_type="group",
            optional_resource_id="eng",
            optional_relation="member",
            optional_subject_filter=SubjectFilter(subject_type="user", optional_subject_id="alice"),
        ),
    )
    token = client.WriteRelationships(
        WriteRelationshipsRequest(
            updates=[create("doc:secret#owner@user:olga")], optional_preconditions=[must_not_exist, must_exist]
        )
    ).written_at
    expect(int(token.token[1:]) > int(first.token[1:]), True, "a write with preconditions that hold commits")
    expect_error(
        lambda: client.WriteRelationships(
            WriteRelationshipsRequest(updates=[touch("doc:secret#viewer@user:eve")], optional_preconditions=[must_not_exist])
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "a failing MUST_NOT_MATCH precondition",
    )
    expect(check(client, "doc:secret#view@user:eve", fully_consistent())[0], NO, "the refused write changed nothing")
    expect_error(
        lambda: client.WriteRelationships(WriteRelationshipsRequest(updates=[create("doc:secret#owner@user:olga")])),
        grpc.StatusCode.ALREADY_EXISTS,
        "CREATE of an existing relationship",
    )

    # Checks in every consistency mode.
    for name, consistency in [
        ("no consistency", None),
        ("minimize_latency", minimize_latency()),
        ("at_least_as_fresh", at_least(token)),
        ("at_exact_snapshot", at_exact(token)),
        ("fully_consistent", fully_consistent()),
    ]:
        expect(check(client, "doc:readme#view@user:alice", consistency)[0], HAS, f"Check {name}: nested groups and arrows")
        expect(check(client, "doc:readme#view@user:bob", consistency)[0], NO, f"Check {name}: no path")
        expect(check(client, "doc:public#view@user:anyone", consistency)[0], HAS, f"Check {name}: wildcard")
        expect(check(client, "doc:public#view@user:mallory", consistency)[0], NO, f"Check {name}: exclusion")
    expect(check(client, "doc:secret#edit@user:olga", at_exact(token))[1], token.token, "at_exact_snapshot answers at that revision")
    expect(check(client, "group:eng#member@user:alice")[0], HAS, "Check on a relation")
    expect(check(client, "group:all#member@group:eng#member")[0], HAS, "Check of a subject set")

    # The snapshot keeps the old answer after a later write.
    later = client.WriteRelationships(WriteRelationshipsRequest(updates=[delete("doc:secret#owner@user:olga")])).written_at
    expect(check(client, "doc:secret#edit@user:olga", at_exact(token))[0], HAS, "at_exact_snapshot sees the past")
    expect(check(client, "doc:secret#edit@user:olga", at_least(later))[0], NO, "at_least_as_fresh sees the delete")
    expect_error(
        lambda: check(client, "doc:readme#view@user:alice", at_least(ZedToken(token="not-a-token"))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "a malformed ZedToken",
    )

    # CheckBulkPermissions: answers in order, a bad item fails alone.
    bulk = client.CheckBulkPermissions(
        CheckBulkPermissionsRequest(
            consistency=fully_consistent(),
            items=[
                CheckBulkPermissionsRequestItem(resource=obj("doc:readme"), permission="view", subject=subj("user:alice")),
                CheckBulkPermissionsRequestItem(resource=obj("doc:readme"), permission="view", subject=subj("user:bob")),
                CheckBulkPermissionsRequestItem(resource=obj("doc:readme"), permission="nope", subject=subj("user:bob")),
                CheckBulkPermissionsRequestItem(resource=obj("doc:a"), permission="view", subject=subj("user:bob")),
            ],
        )
    )
    expect(len(bulk.pairs), 4, "CheckBulkPermissions answers every item")
    expect([p.item.permissionship for p in bulk.pairs if p.WhichOneof("response") == "item"], [HAS, NO, HAS], "CheckBulkPermissions answers")
    expect(bulk.pairs[2].WhichOneof("response"), "error", "CheckBulkPermissions: the unknown permission fails alone")
    expect(bulk.pairs[2].error.code, grpc.StatusCode.FAILED_PRECONDITION.value[0], "CheckBulkPermissions item error code")
    expect(bulk.pairs[1].request.subject.object.object_id, "bob", "CheckBulkPermissions echoes each request")
    expect(bulk.checked_at.token.startswith("r"), True, "CheckBulkPermissions returns checked_at")

    # LookupResources, paged with a cursor.
    def lookup_resources(limit=0, cursor=None):
        return list(
            client.LookupResources(
                LookupResourcesRequest(
                    consistency=fully_consistent(),
                    resource_object_type="doc",
                    permission="view",
                    subject=subj("user:bob"),
                    optional_limit=limit,
                    optional_cursor=cursor,
                )
            )
        )

    everything = [r.resource_object_id for r in lookup_resources()]
    expect(everything, ["a", "b", "c", "public"], "LookupResources")
    page1 = lookup_resources(limit=2)
    page2 = lookup_resources(limit=2, cursor=page1[-1].after_result_cursor)
    expect([r.resource_object_id for r in page1 + page2], everything, "LookupResources paged with after_result_cursor")
    expect(
        {r.permissionship for r in page1}, {LookupPermissionship.LOOKUP_PERMISSIONSHIP_HAS_PERMISSION}, "LookupResources permissionship"
    )

    # LookupSubjects, with the wildcard and its exclusions.
    def lookup_subjects(resource, wildcards=LookupSubjectsRequest.WildcardOption.WILDCARD_OPTION_UNSPECIFIED):
        return list(
            client.LookupSubjects(
                LookupSubjectsRequest(
                    consistency=fully_consistent(),
                    resource=obj(resource),
                    permission="view",
                    subject_object_type="user",
                    wildcard_option=wildcards,
                )
            )
        )

    expect(sorted(s.subject.subject_object_id for s in lookup_subjects("doc:readme")), ["alice", "olga"], "LookupSubjects")
    public = lookup_subjects("doc:public")
    expect([s.subject.subject_object_id for s in public], ["*"], "LookupSubjects reports the wildcard")
    expect([e.subject_object_id for e in public[0].excluded_subjects], ["mallory"], "LookupSubjects: excluded subjects")
    expect(list(public[0].excluded_subject_ids), ["mallory"], "LookupSubjects: the deprecated excluded ids too")
    expect(
        lookup_subjects("doc:public", LookupSubjectsRequest.WildcardOption.WILDCARD_OPTION_EXCLUDE_WILDCARDS),
        [],
        "LookupSubjects without wildcards",
    )

    # ExpandPermissionTree.
    tree = client.ExpandPermissionTree(
        ExpandPermissionTreeRequest(consistency=fully_consistent(), resource=obj("doc:public"), permission="view")
    ).tree_root
    expect((tree.expanded_object.object_id, tree.expanded_relation), ("public", "view"), "Expand: the root names the userset")
    expect(tree.intermediate.operation, AlgebraicSubjectSet.Operation.OPERATION_EXCLUSION, "Expand: view is an exclusion")
    base, banned = tree.intermediate.children
    expect(base.intermediate.operation, AlgebraicSubjectSet.Operation.OPERATION_UNION, "Expand: the base is a union")
    viewers = [c for c in base.intermediate.children if c.expanded_relation == "viewer"][0]
    expect([s.object.object_id for s in viewers.leaf.subjects], ["*"], "Expand: the viewer leaf holds the wildcard")
    expect([s.object.object_id for s in banned.leaf.subjects], ["mallory"], "Expand: the subtracted leaf")
    expect_error(
        lambda: client.ExpandPermissionTree(ExpandPermissionTreeRequest(resource=obj("doc:public"), permission="nope")),
        grpc.StatusCode.FAILED_PRECONDITION,
        "Expand of an unknown permission",
    )

    # ReadRelationships: filters, paging, prefixes.
    def read(filter, limit=0, cursor=None):
        return list(
            client.ReadRelationships(
                ReadRelationshipsRequest(
                    consistency=fully_consistent(), relationship_filter=filter, optional_limit=limit, optional_cursor=cursor
                )
            )
        )

    bobs = read(RelationshipFilter(resource_type="doc", optional_subject_filter=SubjectFilter(subject_type="user", optional_subject_id="bob")))
    expect([text_of(r.relationship) for r in bobs], ["doc:a#viewer@user:bob", "doc:b#viewer@user:bob", "doc:c#viewer@user:bob"], "ReadRelationships by subject")
    expect(bobs[0].read_at.token.startswith("r"), True, "ReadRelationships returns read_at")
    page1 = read(RelationshipFilter(resource_type="doc"), limit=3)
    page2 = read(RelationshipFilter(resource_type="doc"), limit=100, cursor=page1[-1].after_result_cursor)
    all_docs = read(RelationshipFilter(resource_type="doc"))
    expect([text_of(r.relationship) for r in page1 + page2], [text_of(r.relationship) for r in all_docs], "ReadRelationships paged")
    expect(len(all_docs), 7, "ReadRelationships: every doc relationship")
    prefixed = read(RelationshipFilter(resource_type="doc", optional_resource_id_prefix="p"))
    expect([text_of(r.relationship) for r in prefixed], ["doc:public#banned@user:mallory", "doc:public#viewer@user:*"], "ReadRelationships by id prefix")
    subject_sets = read(
        RelationshipFilter(resource_type="group", optional_subject_filter=SubjectFilter(subject_type="group", optional_relation=SubjectFilter.RelationFilter(relation="member")))
    )
    expect([text_of(r.relationship) for r in subject_sets], ["group:all#member@group:eng#member"], "ReadRelationships of subject sets")

    # Watch: subscribe from the newest token, then write; the write arrives.
    newest = client.WriteRelationships(WriteRelationshipsRequest(updates=[touch("doc:d#viewer@user:bob")])).written_at
    watcher = InsecureClient(endpoint, key)
    updates = queue.Queue()
    stream = watcher.Watch(WatchRequest(optional_start_cursor=newest))

    def follow():
        try:
            for response in stream:
                updates.put(response)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                updates.put(e)

    threading.Thread(target=follow, daemon=True).start()
    time.sleep(0.3)
    watched = client.WriteRelationships(
        WriteRelationshipsRequest(updates=[touch("doc:e#viewer@user:bob"), delete("doc:d#viewer@user:bob")])
    ).written_at
    got = updates.get(timeout=10)
    expect(isinstance(got, grpc.RpcError), False, f"Watch streams ({got if isinstance(got, grpc.RpcError) else 'ok'})")
    expect(got.changes_through.token, watched.token, "Watch: changes_through is the write's ZedToken")
    expect(
        sorted((u.operation, text_of(u.relationship)) for u in got.updates),
        sorted(
            [
                (RelationshipUpdate.Operation.OPERATION_TOUCH, "doc:e#viewer@user:bob"),
                (RelationshipUpdate.Operation.OPERATION_DELETE, "doc:d#viewer@user:bob"),
            ]
        ),
        "Watch: the write made after subscribing arrives",
    )
    # A filtered watch sees only what it asked for.
    filtered = watcher.Watch(WatchRequest(optional_start_cursor=newest, optional_object_types=["group"]))
    client.WriteRelationships(WriteRelationshipsRequest(updates=[touch("group:ops#member@user:carol")]))
    first_group = next(iter(filtered))
    expect([text_of(u.relationship) for u in first_group.updates], ["group:ops#member@user:carol"], "Watch filtered by object type")
    filtered.cancel()
    stream.cancel()

    # DeleteRelationships by filter.
    deleted = client.DeleteRelationships(
        DeleteRelationshipsRequest(
            relationship_filter=RelationshipFilter(
                resource_type="doc", optional_relation="viewer", optional_subject_filter=SubjectFilter(subject_type="user", optional_subject_id="bob")
            )
        )
    )
    expect(deleted.relationships_deleted_count, 4, "DeleteRelationships by filter counts what it deleted")
    expect(deleted.deletion_progress, DeleteRelationshipsResponse.DeletionProgress.DELETION_PROGRESS_COMPLETE, "DeleteRelationships is complete")
    expect(check(client, "doc:a#view@user:bob", at_least(deleted.deleted_at))[0], NO, "deleted relationships no longer grant")
    partial = client.DeleteRelationships(
        DeleteRelationshipsRequest(
            relationship_filter=RelationshipFilter(resource_type="group", optional_relation="member"),
            optional_limit=1,
            optional_allow_partial_deletions=True,
        )
    )
    expect(
        (partial.relationships_deleted_count, partial.deletion_progress),
        (1, DeleteRelationshipsResponse.DeletionProgress.DELETION_PROGRESS_PARTIAL),
        "DeleteRelationships with a limit and partial deletions",
    )
    expect_error(
        lambda: client.DeleteRelationships(
            DeleteRelationshipsRequest(relationship_filter=RelationshipFilter(resource_type="group"), optional_limit=1)
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "DeleteRelationships over its limit without partial deletions",
    )

    # ImportBulkRelationships (a client stream) and ExportBulkRelationships (paged).
    batches = [
        ImportBulkRelationshipsRequest(relationships=[rel(f"doc:bulk{i:03}#viewer@user:u{i}") for i in range(j, j + 50)])
        for j in range(0, 150, 50)
    ]
    imported = client.ImportBulkRelationships(iter(batches))
    expect(imported.num_loaded, 150, "ImportBulkRelationships")
    expect(check(client, "doc:bulk149#view@user:u149", fully_consistent())[0], HAS, "imported relationships grant")
    bulk_filter = RelationshipFilter(resource_type="doc", optional_resource_id_prefix="bulk")
    chunks = list(
        client.ExportBulkRelationships(
            ExportBulkRelationshipsRequest(consistency=fully_consistent(), optional_limit=40, optional_relationship_filter=bulk_filter)
        )
    )
    expect([len(c.relationships) for c in chunks], [40, 40, 40, 30], "ExportBulkRelationships in chunks of optional_limit")
    exported = sorted(text_of(r) for c in chunks for r in c.relationships)
    expect(exported, sorted(f"doc:bulk{i:03}#viewer@user:u{i}" for i in range(150)), "ExportBulkRelationships exports what was imported")
    resumed = list(
        client.ExportBulkRelationships(
            ExportBulkRelationshipsRequest(optional_limit=40, optional_cursor=chunks[1].after_result_cursor, optional_relationship_filter=bulk_filter)
        )
    )
    expect(
        [text_of(r) for c in resumed for r in c.relationships],
        [text_of(r) for c in chunks[2:] for r in c.relationships],
        "ExportBulkRelationships resumes from a cursor",
    )

    # Mistakes get SpiceDB's codes.
    expect_error(lambda: check(client, "doc:readme#nope@user:alice"), grpc.StatusCode.FAILED_PRECONDITION, "unknown relation", "nope")
    expect_error(lambda: check(client, "nothing:readme#view@user:alice"), grpc.StatusCode.FAILED_PRECONDITION, "unknown definition", "nothing")
    expect_error(lambda: check(client, "doc:has space#view@user:alice"), grpc.StatusCode.INVALID_ARGUMENT, "malformed resource id")
    expect_error(
        lambda: client.WriteRelationships(WriteRelationshipsRequest(updates=[touch("doc:a#viewer@user:bad id")])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "malformed subject id in a write",
    )
    expect_error(
        lambda: client.WriteRelationships(WriteRelationshipsRequest(updates=[touch("doc:a#view@user:bob")])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "a write to a permission",
    )
    expect_error(
        lambda: client.WriteRelationships(WriteRelationshipsRequest(updates=[touch("doc:a#owner@group:eng")])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "a subject type the relation does not allow",
    )
    expect_error(
        lambda: client.WriteRelationships(WriteRelationshipsRequest(updates=[touch("doc:a#nope@user:bob")])),
        grpc.StatusCode.FAILED_PRECONDITION,
        "a write to an unknown relation",
    )
    # Caveats: a caveated write, a conditional Check naming the missing parameter, the
    # decision once the context gives it, a conditional LookupResources, and the caveat
    # read back.
    def struct(values):
        s = Struct()
        s.update(values)
        return s

    def caveated_touch(text, name, context):
        r = rel(text)
        r.optional_caveat.CopyFrom(ContextualizedCaveat(caveat_name=name, context=struct(context)))
        return RelationshipUpdate(operation=RelationshipUpdate.Operation.OPERATION_TOUCH, relationship=r)

    before_caveat = client.WriteRelationships(WriteRelationshipsRequest(updates=[touch("doc:f#viewer@user:bob")])).written_at
    written = client.WriteRelationships(
        WriteRelationshipsRequest(updates=[caveated_touch("console:prod#admin@user:carol", "on_network", {"cidr": "10.0.0.0/8"})])
    )

    def check_with(query, context=None):
        left, right = query.split("@", 1)
        o, p = left.split("#", 1)
        return client.CheckPermission(
            CheckPermissionRequest(
                consistency=at_least(written.written_at),
                resource=obj(o),
                permission=p,
                subject=subj(right),
                context=struct(context) if context is not None else None,
            )
        )

    conditional = check_with("console:prod#manage@user:carol")
    expect(conditional.permissionship, CheckPermissionResponse.PERMISSIONSHIP_CONDITIONAL_PERMISSION, "a caveated Check without context is conditional")
    expect(list(conditional.partial_caveat_info.missing_required_context), ["user_ip"], "the conditional Check names the missing parameter")
    expect(check_with("console:prod#manage@user:carol", {"user_ip": "10.1.2.3"}).permissionship, HAS, "a caveated Check with a matching context")
    expect(check_with("console:prod#manage@user:carol", {"user_ip": "11.1.2.3"}).permissionship, NO, "a caveated Check with another network")
    expect(
        check_with("console:prod#manage@user:carol", {"user_ip": "11.1.2.3", "cidr": "0.0.0.0/0"}).permissionship,
        NO,
        "the relationship's context wins over the request's",
    )
    found = list(
        client.LookupResources(
            LookupResourcesRequest(consistency=fully_consistent(), resource_object_type="console", permission="manage", subject=subj("user:carol"))
        )
    )
    expect(
        [(r.resource_object_id, r.permissionship, list(r.partial_caveat_info.missing_required_context)) for r in found],
        [("prod", LookupPermissionship.LOOKUP_PERMISSIONSHIP_CONDITIONAL_PERMISSION, ["user_ip"])],
        "a conditional LookupResources",
    )
    read_back = list(
        client.ReadRelationships(
            ReadRelationshipsRequest(consistency=fully_consistent(), relationship_filter=RelationshipFilter(resource_type="console"))
        )
    )
    expect(
        [(r.relationship.optional_caveat.caveat_name, dict(r.relationship.optional_caveat.context)) for r in read_back],
        [("on_network", {"cidr": "10.0.0.0/8"})],
        "ReadRelationships returns the caveat and its context",
    )
    bulk = client.CheckBulkPermissions(
        CheckBulkPermissionsRequest(
            consistency=fully_consistent(),
            items=[
                CheckBulkPermissionsRequestItem(resource=obj("console:prod"), permission="manage", subject=subj("user:carol")),
                CheckBulkPermissionsRequestItem(
                    resource=obj("console:prod"), permission="manage", subject=subj("user:carol"), context=struct({"user_ip": "10.9.9.9"})
                ),
            ],
        )
    )
    expect(
        [(p.item.permissionship, list(p.item.partial_caveat_info.missing_required_context)) for p in bulk.pairs],
        [(CheckPermissionResponse.PERMISSIONSHIP_CONDITIONAL_PERMISSION, ["user_ip"]), (HAS, [])],
        "CheckBulkPermissions: a conditional item names what is missing, a context decides it",
    )
    exported = [
        r
        for page in client.ExportBulkRelationships(
            ExportBulkRelationshipsRequest(consistency=fully_consistent(), optional_relationship_filter=RelationshipFilter(resource_type="console"))
        )
        for r in page.relationships
    ]
    expect(
        [(r.optional_caveat.caveat_name, dict(r.optional_caveat.context)) for r in exported],
        [("on_network", {"cidr": "10.0.0.0/8"})],
        "ExportBulkRelationships carries the caveat",
    )
    replay = watcher.Watch(WatchRequest(optional_start_cursor=before_caveat))
    first = next(iter(replay))
    replay.cancel()
    expect(
        [(u.relationship.optional_caveat.caveat_name, dict(u.relationship.optional_caveat.context)) for u in first.updates],
        [("on_network", {"cidr": "10.0.0.0/8"})],
        "Watch carries the caveat",
    )
    expect_error(
        lambda: client.WriteRelationships(
            WriteRelationshipsRequest(updates=[caveated_touch("console:prod#admin@user:dan", "on_network", {"cidr": 8})])
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "a caveat context of the wrong type is refused",
        "cidr",
    )
    expect_error(
        lambda: client.LookupResources(LookupResourcesRequest(resource_object_type="doc", permission="nope", subject=subj("user:bob"))),
        grpc.StatusCode.FAILED_PRECONDITION,
        "LookupResources of an unknown permission",
    )
    wrong = InsecureClient(endpoint, key + "-wrong")
    expect_error(lambda: check(wrong, "doc:readme#view@user:alice"), grpc.StatusCode.UNAUTHENTICATED, "a wrong preshared key")
    expect_error(lambda: wrong.ReadSchema(ReadSchemaRequest()), grpc.StatusCode.UNAUTHENTICATED, "a wrong key on SchemaService")
    # A request Arbiter cannot serve: DiffSchema is not offered.
    expect_error(lambda: client.DiffSchema(DiffSchemaRequest(comparison_schema=SCHEMA)), grpc.StatusCode.UNIMPLEMENTED, "DiffSchema is not offered")

    print(f"{passed} passed, 0 failed", flush=True)


if __name__ == "__main__":
    main()
