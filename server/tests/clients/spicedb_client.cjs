// SpiceDB's official Node client (npm `@authzed/authzed-node`) against a running
// `arbiter serve`. Run by server/tests/spicedb_client.rs (NODE_PATH points at the cached
// install):
//
//     node spicedb_client.cjs HOST:PORT PRESHARED_KEY
//
// Every answer is asserted; the first failure exits non-zero saying what was expected.
"use strict";

const { v1 } = require("@authzed/authzed-node");
const grpc = require("@grpc/grpc-js");

const [endpoint, key] = process.argv.slice(2);

const SCHEMA = `
definition user {}

definition group {
    relation member: user | group#member
}

definition doc {
    relation owner: user
    relation viewer: user | user:* | group#member
    relation banned: user
    permission edit = owner
    permission view = (viewer + edit) - banned
}

definition console {
    relation admin: user | user with on_network
    permission manage = admin
}

caveat on_network(user_ip ipaddress, cidr string) {
    user_ip.in_cidr(cidr)
}
`;

let passed = 0;

function fail(message) {
  console.log(`FAIL ${message}`);
  console.log(`${passed} passed, 1 failed`);
  process.exit(1);
}

function expect(actual, expected, what) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) fail(`${what}: expected ${e}, got ${a}`);
  passed += 1;
  console.log(`ok ${what}`);
}

async function expectError(fn, code, what, contains) {
  try {
    await fn();
  } catch (e) {
    expect(e.code, code, `${what} (${e.details})`);
    if (contains !== undefined) expect(e.details.includes(contains), true, `${what}: the message names \`${contains}\``);
    return;
  }
  fail(`${what}: expected error code ${code}, the call succeeded`);
}

const obj = (text) => {
  const [objectType, objectId] = text.split(":");
  return v1.ObjectReference.create({ objectType, objectId });
};
const subj = (text) => {
  const [o, rel] = text.split("#");
  return v1.SubjectReference.create({ object: obj(o), optionalRelation: rel || "" });
};
const rel = (text) => {
  const [left, right] = text.split("@");
  const [o, relation] = left.split("#");
  return v1.Relationship.create({ resource: obj(o), relation, subject: subj(right) });
};
const update = (operation, text) => v1.RelationshipUpdate.create({ operation, relationship: rel(text) });
const touch = (text) => update(v1.RelationshipUpdate_Operation.TOUCH, text);
const create = (text) => update(v1.RelationshipUpdate_Operation.CREATE, text);
const del = (text) => update(v1.RelationshipUpdate_Operation.DELETE, text);
const text = (r) =>
  `${r.resource.objectType}:${r.resource.objectId}#${r.relation}@${r.subject.object.objectType}:${r.subject.object.objectId}` +
  (r.subject.optionalRelation ? `#${r.subject.optionalRelation}` : "");

const consistency = {
  minimize_latency: () => v1.Consistency.create({ requirement: { oneofKind: "minimizeLatency", minimizeLatency: true } }),
  at_least_as_fresh: (token) => v1.Consistency.create({ requirement: { oneofKind: "atLeastAsFresh", atLeastAsFresh: token } }),
  at_exact_snapshot: (token) => v1.Consistency.create({ requirement: { oneofKind: "atExactSnapshot", atExactSnapshot: token } }),
  fully_consistent: () => v1.Consistency.create({ requirement: { oneofKind: "fullyConsistent", fullyConsistent: true } }),
};

const HAS = v1.CheckPermissionResponse_Permissionship.HAS_PERMISSION;
const NO = v1.CheckPermissionResponse_Permissionship.NO_PERMISSION;

async function main() {
  const client = v1.NewClient(key, endpoint, v1.ClientSecurity.INSECURE_PLAINTEXT_CREDENTIALS).promises;
  const check = async (query, c) => {
    const [left, right] = query.split("@");
    const [o, permission] = left.split("#");
    const resp = await client.checkPermission(
      v1.CheckPermissionRequest.create({ consistency: c, resource: obj(o), permission, subject: subj(right) })
    );
    return resp.permissionship;
  };

  const schema = await client.writeSchema(v1.WriteSchemaRequest.create({ schema: SCHEMA }));
  expect(schema.writtenAt.token.startsWith("r"), true, "WriteSchema returns a ZedToken");
  expect((await client.readSchema(v1.ReadSchemaRequest.create({}))).schemaText, SCHEMA, "ReadSchema");

  const written = await client.writeRelationships(
    v1.WriteRelationshipsRequest.create({
      updates: [
        touch("group:eng#member@user:alice"),
        touch("doc:readme#viewer@group:eng#member"),
        touch("doc:readme#owner@user:olga"),
        touch("doc:public#viewer@user:*"),
        touch("doc:public#banned@user:mallory"),
      ],
      optionalPreconditions: [
        v1.Precondition.create({
          operation: v1.Precondition_Operation.MUST_NOT_MATCH,
          filter: v1.RelationshipFilter.create({ resourceType: "doc", optionalResourceId: "readme" }),
        }),
      ],
    })
  );
  const token = written.writtenAt;
  expect(token.token.startsWith("r"), true, "WriteRelationships with a precondition");
  await expectError(
    () => client.writeRelationships(v1.WriteRelationshipsRequest.create({ updates: [create("doc:readme#owner@user:olga")] })),
    grpc.status.ALREADY_EXISTS,
    "CREATE of an existing relationship",
    "doc:readme#owner@user:olga"
  );

  for (const [name, c] of [
    ["minimize_latency", consistency.minimize_latency()],
    ["at_least_as_fresh", consistency.at_least_as_fresh(token)],
    ["at_exact_snapshot", consistency.at_exact_snapshot(token)],
    ["fully_consistent", consistency.fully_consistent()],
  ]) {
    expect(await check("doc:readme#view@user:alice", c), HAS, `Check ${name}: through a group`);
    expect(await check("doc:readme#view@user:bob", c), NO, `Check ${name}: no path`);
    expect(await check("doc:public#view@user:anyone", c), HAS, `Check ${name}: wildcard`);
    expect(await check("doc:public#view@user:mallory", c), NO, `Check ${name}: exclusion`);
  }

  const bulk = await client.checkBulkPermissions(
    v1.CheckBulkPermissionsRequest.create({
      items: [
        v1.CheckBulkPermissionsRequestItem.create({ resource: obj("doc:readme"), permission: "edit", subject: subj("user:olga") }),
        v1.CheckBulkPermissionsRequestItem.create({ resource: obj("doc:readme"), permission: "nope", subject: subj("user:olga") }),
      ],
    })
  );
  expect(bulk.pairs[0].response.oneofKind, "item", "CheckBulkPermissions answers");
  expect(bulk.pairs[0].response.item.permissionship, HAS, "CheckBulkPermissions: allowed");
  expect(bulk.pairs[1].response.error.code, grpc.status.FAILED_PRECONDITION, "CheckBulkPermissions: a bad item fails alone");

  const resources = await client.lookupResources(
    v1.LookupResourcesRequest.create({ resourceObjectType: "doc", permission: "view", subject: subj("user:alice") })
  );
  expect(resources.map((r) => r.resourceObjectId), ["public", "readme"], "LookupResources");
  const subjects = await client.lookupSubjects(
    v1.LookupSubjectsRequest.create({ resource: obj("doc:readme"), permission: "view", subjectObjectType: "user" })
  );
  expect(subjects.map((s) => s.subject.subjectObjectId).sort(), ["alice", "olga"], "LookupSubjects");

  const tree = await client.expandPermissionTree(
    v1.ExpandPermissionTreeRequest.create({ resource: obj("doc:readme"), permission: "view" })
  );
  expect(tree.treeRoot.treeType.oneofKind, "intermediate", "ExpandPermissionTree");
  expect(tree.treeRoot.treeType.intermediate.operation, v1.AlgebraicSubjectSet_Operation.EXCLUSION, "ExpandPermissionTree: exclusion at the root");

  const read = await client.readRelationships(
    v1.ReadRelationshipsRequest.create({ relationshipFilter: v1.RelationshipFilter.create({ resourceType: "doc", optionalResourceId: "public" }) })
  );
  expect(read.map((r) => text(r.relationship)), ["doc:public#banned@user:mallory", "doc:public#viewer@user:*"], "ReadRelationships");

  // Watch: subscribe from the newest token, write, see the write.
  const raw = v1.NewClient(key, endpoint, v1.ClientSecurity.INSECURE_PLAINTEXT_CREDENTIALS);
  const stream = raw.watch(v1.WatchRequest.create({ optionalStartCursor: token }));
  const seen = new Promise((resolve, reject) => {
    stream.on("data", (resp) => resolve(resp));
    stream.on("error", (e) => {
      if (e.code !== grpc.status.CANCELLED) reject(e);
    });
    setTimeout(() => reject(new Error("no Watch message within 10 s")), 10000);
  });
  await new Promise((r) => setTimeout(r, 200));
  const later = await client.writeRelationships(v1.WriteRelationshipsRequest.create({ updates: [touch("doc:new#viewer@user:bob")] }));
  const change = await seen;
  stream.cancel();
  expect(change.changesThrough.token, later.writtenAt.token, "Watch: changes_through");
  expect(change.updates.map((u) => [u.operation, text(u.relationship)]), [[v1.RelationshipUpdate_Operation.TOUCH, "doc:new#viewer@user:bob"]], "Watch: the write arrives");
  raw.close();

  const deleted = await client.deleteRelationships(
    v1.DeleteRelationshipsRequest.create({ relationshipFilter: v1.RelationshipFilter.create({ resourceType: "doc", optionalResourceId: "new" }) })
  );
  expect(deleted.relationshipsDeletedCount, "1", "DeleteRelationships");
  expect(await check("doc:new#view@user:bob", consistency.at_least_as_fresh(deleted.deletedAt)), NO, "the delete is seen");
  await client.writeRelationships(v1.WriteRelationshipsRequest.create({ updates: [del("doc:public#banned@user:mallory")] }));
  expect(await check("doc:public#view@user:mallory", consistency.fully_consistent()), HAS, "a DELETE update lifts the ban");

  // Caveats: a caveated write, a conditional Check naming what is missing, the answer
  // once the context gives it, and a conditional LookupResources.
  const caveated = rel("console:prod#admin@user:carol");
  caveated.optionalCaveat = v1.ContextualizedCaveat.create({
    caveatName: "on_network",
    context: v1.createStructFromObject({ cidr: "10.0.0.0/8" }),
  });
  const wroteCaveat = await client.writeRelationships(
    v1.WriteRelationshipsRequest.create({
      updates: [v1.RelationshipUpdate.create({ operation: v1.RelationshipUpdate_Operation.TOUCH, relationship: caveated })],
    })
  );
  const checkWith = (context) =>
    client.checkPermission(
      v1.CheckPermissionRequest.create({
        consistency: consistency.at_least_as_fresh(wroteCaveat.writtenAt),
        resource: obj("console:prod"),
        permission: "manage",
        subject: subj("user:carol"),
        context: context === undefined ? undefined : v1.createStructFromObject(context),
      })
    );
  const conditional = await checkWith(undefined);
  expect(conditional.permissionship, v1.CheckPermissionResponse_Permissionship.CONDITIONAL_PERMISSION, "a caveated Check without context is conditional");
  expect(conditional.partialCaveatInfo.missingRequiredContext, ["user_ip"], "the conditional Check names the missing parameter");
  expect((await checkWith({ user_ip: "10.9.8.7" })).permissionship, HAS, "a caveated Check with a matching context");
  expect((await checkWith({ user_ip: "192.168.1.1" })).permissionship, NO, "a caveated Check from another network");
  const conditionalLookup = await client.lookupResources(
    v1.LookupResourcesRequest.create({
      consistency: consistency.fully_consistent(),
      resourceObjectType: "console",
      permission: "manage",
      subject: subj("user:carol"),
    })
  );
  expect(
    conditionalLookup.map((r) => [r.resourceObjectId, r.permissionship, r.partialCaveatInfo.missingRequiredContext]),
    [["prod", v1.LookupPermissionship.CONDITIONAL_PERMISSION, ["user_ip"]]],
    "a conditional LookupResources"
  );

  await expectError(() => check("doc:readme#nope@user:alice"), grpc.status.FAILED_PRECONDITION, "unknown relation");
  await expectError(() => check("doc:bad id#view@user:alice"), grpc.status.INVALID_ARGUMENT, "malformed id");
  const wrong = v1.NewClient(`${key}-wrong`, endpoint, v1.ClientSecurity.INSECURE_PLAINTEXT_CREDENTIALS).promises;
  await expectError(
    () => wrong.checkPermission(v1.CheckPermissionRequest.create({ resource: obj("doc:readme"), permission: "view", subject: subj("user:alice") })),
    grpc.status.UNAUTHENTICATED,
    "a wrong preshared key"
  );

  console.log(`${passed} passed, 0 failed`);
  process.exit(0);
}

main().catch((e) => fail(`unexpected error: ${e && e.stack ? e.stack : e}`));
