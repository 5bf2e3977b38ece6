// Smoke test with fhir-kit-client against a running Ward node: node smoke.mjs <fhir-base-url> <access-token>
import Client from 'fhir-kit-client';
import assert from 'node:assert/strict';

const anonymous = new Client({ baseUrl: process.argv[2] });
await assert.rejects(anonymous.search({ resourceType: 'Patient' }), (e) => e.response.status === 401
  && e.response.data.resourceType === 'OperationOutcome', 'without a token, 401 with an OperationOutcome');

const client = new Client({ baseUrl: process.argv[2], bearerToken: process.argv[3] });

const meta = await client.capabilityStatement();
assert.equal(meta.resourceType, 'CapabilityStatement');
assert.equal(meta.fhirVersion, '4.0.1');

const created = await client.create({
  resourceType: 'Patient',
  body: { resourceType: 'Patient', name: [{ family: 'Kitclient', given: ['Node'] }], birthDate: '1980-02-29' },
});
assert.equal(created.meta.versionId, '1');

const read = await client.read({ resourceType: 'Patient', id: created.id });
assert.equal(read.name[0].family, 'Kitclient');

read.name[0].family = 'Kitclient-Updated';
const updated = await client.update({ resourceType: 'Patient', id: created.id, body: read });
assert.equal(updated.meta.versionId, '2');

const found = await client.search({ resourceType: 'Patient', searchParams: { family: 'kitclient-upd', birthdate: 'ge1980' } });
assert.equal(found.resourceType, 'Bundle');
assert.ok(found.entry.some((e) => e.resource.id === created.id), 'search finds the patient');

const tx = await client.transaction({
  body: {
    resourceType: 'Bundle',
    type: 'transaction',
    entry: [
      { fullUrl: 'urn:uuid:5e0c2b1e-0b1a-4c53-9c43-1f0a7c6d2a11', resource: { resourceType: 'Patient', name: [{ family: 'Kittx' }] }, request: { method: 'POST', url: 'Patient' } },
      { resource: { resourceType: 'Observation', status: 'final', code: { coding: [{ system: 'http://loinc.org', code: '29463-7' }] }, subject: { reference: 'urn:uuid:5e0c2b1e-0b1a-4c53-9c43-1f0a7c6d2a11' } }, request: { method: 'POST', url: 'Observation' } },
    ],
  },
});
assert.equal(tx.type, 'transaction-response');
const patientRef = tx.entry[0].response.location.split('/_history')[0];
const obs = await client.search({ resourceType: 'Observation', searchParams: { subject: patientRef } });
assert.equal(obs.total, 1);

const history = await client.history({ resourceType: 'Patient', id: created.id });
assert.equal(history.total, 2);

await client.delete({ resourceType: 'Patient', id: created.id });
await assert.rejects(client.read({ resourceType: 'Patient', id: created.id }), (err) => err.response.status === 410);

console.log('fhir-kit-client smoke test passed');
